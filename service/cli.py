"""`ganserve`: the command-line client (built on the SDK) and `ganserve serve` to start the service.

    ganserve generate --label 7 -n 16 -o sevens.png
    ganserve interpolate --from-seed 1 --to-seed 2 --from-label 3 --to-label 8 --steps 16 -o walk.gif
    ganserve arithmetic --plus 1,2 --minus 3 --plus 4 --label 5 --neighbors 4 -o sum.png
    ganserve score img1.png img2.png
    ganserve models
    ganserve dataset digits.npz --per-label 2000 --seed 0   # bulk data; resumes if interrupted
    ganserve dataset again.npz --from-manifest digits.manifest.json
    ganserve serve --port 8000

`--url` (or GANSERVE_URL) picks the service, `--json` prints machine-readable output. Exit codes:
0 ok, 1 the service answered with an error (its message is printed), 2 bad command line,
3 the service could not be reached.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

from . import __version__
from .client import APIError, AsyncGanClient, GanClient, GanServeError, ImageSet
from .dataset import DatasetError


def _seeds(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _save(images: ImageSet, out: Path | None, strip: bool = False, duration_ms: int = 80) -> str | None:
    if out is None:
        return None
    if out.suffix.lower() == ".gif":
        images.save_gif(out, duration_ms=duration_ms)
    elif strip:
        images.save_strip(out)
    else:
        images.save_grid(out)
    return str(out)


def _describe(images: ImageSet) -> list[dict]:
    return [{"seed": img.seed, "label": img.label, "t": img.t} for img in images]


def cmd_generate(gan: GanClient, args) -> dict:
    labels = args.labels if args.labels else args.label
    result = gan.generate(
        model=args.model,
        n=args.n,
        seeds=args.seeds,
        seed=args.seed,
        labels=labels,
        truncation=args.truncation,
    )
    saved = _save(result, args.out)
    if args.out_dir:
        result.save_all(args.out_dir)
    return {"model": result.model, "seed": result.seed, "images": _describe(result), "saved": saved}


def cmd_interpolate(gan: GanClient, args) -> dict:
    seeds = args.seeds or [args.from_seed, args.to_seed]
    labels = args.labels or [args.from_label, args.to_label]
    if len(labels) != len(seeds):
        raise SystemExit("error: give one --labels value per keyframe seed")
    keyframes = [
        {"seed": s, **({"label": lab} if lab is not None else {})}
        for s, lab in zip(seeds, labels, strict=True)
    ]
    walk = gan.interpolate(model=args.model, keyframes=keyframes, steps=args.steps, method=args.method)
    saved = _save(walk, args.out, strip=True, duration_ms=args.duration_ms)
    return {"model": walk.model, "frames": _describe(walk), "saved": saved}


def cmd_arithmetic(gan: GanClient, args) -> dict:
    terms = [{"weight": 1.0, "seeds": s} for s in args.plus] + [
        {"weight": -1.0, "seeds": s} for s in args.minus
    ]
    if not terms:
        raise SystemExit("error: give at least one --plus or --minus group of seeds")
    out = gan.arithmetic(
        model=args.model, terms=terms, label=args.label, neighbors=args.neighbors, seed=args.seed
    )
    images = ImageSet(out.model, [out.result, *out.neighbors])
    saved = _save(images, args.out, strip=True)
    return {
        "model": out.model,
        "label": out.label,
        "terms": terms,
        "neighbors": len(out.neighbors),
        "saved": saved,
    }


def cmd_score(gan: GanClient, args) -> dict:
    result = gan.score(args.images, model=args.model, labels=args.labels)
    rows = [{"file": str(path), **s.model_dump()} for path, s in zip(args.images, result.scores, strict=True)]
    return {"model": result.model, "scores": rows, "set": result.set.model_dump()}


def cmd_models(gan: GanClient, args) -> dict:
    return gan.models().model_dump(exclude={"models": {"__all__": {"card"}}})


def cmd_dataset(args) -> dict:
    """Runs its own event loop: several requests in flight (see service.dataset)."""
    from . import dataset

    async def run() -> dict:
        async with AsyncGanClient(
            args.url, timeout=args.timeout, api_key=args.api_key, retries=10, max_retry_seconds=300
        ) as gan:
            if args.from_manifest:
                plan = dataset.read_manifest(args.from_manifest)
            else:
                plan = await dataset.make_plan(
                    gan, model=args.model, n=args.n, per_label=args.per_label, labels=args.labels,
                    seed=args.seed, truncation=args.truncation, chunk=args.chunk,
                    fmt=args.format or ("npz" if args.out.suffix == ".npz" else "folder"),
                )  # fmt: skip
            resumed = dataset.parts_dir(args.out).exists()
            manifest = await dataset.build_dataset(
                gan, plan, args.out, concurrency=args.concurrency, progress=not args.no_progress
            )
        return {"model": plan.model, "images": plan.count, "out": str(args.out), "manifest": str(manifest),
                "resumed": resumed}  # fmt: skip

    return asyncio.run(run())


def _print_human(command: str, result: dict) -> None:
    if command in ("generate", "interpolate"):
        items = result.get("images") or result.get("frames")
        print(
            f"{len(items)} images from {result['model']}"
            + (f" (base seed {result['seed']})" if result.get("seed") is not None else "")
        )
        for item in items:
            label = item["label"]
            if isinstance(label, list):
                label = "[" + ", ".join(f"{v:.2f}" for v in label) + "]"
            parts = [f"t {item['t']:.3f}" if item.get("t") is not None else None,
                     f"seed {item['seed']}" if item.get("seed") is not None else None,
                     f"label {label}" if label is not None else None]  # fmt: skip
            print("  " + "  ".join(p for p in parts if p))
    elif command == "arithmetic":
        print(f"result + {result['neighbors']} neighbours from {result['model']} (label {result['label']})")
    elif command == "score":
        for row in result["scores"]:
            real = "n/a" if row["realness"] is None else f"{row['realness']:.3f}"
            print(
                f"{row['file']}: realness {real}  label {row['label_name']} ({(row['confidence'] or 0):.1%})"
            )
        s = result["set"]
        extras = [f"IS {s['inception_score']:.3f}" if s.get("inception_score") is not None else None,
                  f"FID {s['fid']:.2f}" if s.get("fid") is not None else None, s.get("warning")]  # fmt: skip
        print(f"{s['n']} images; " + "; ".join(e for e in extras if e))
    elif command == "dataset":
        how = " (resumed)" if result["resumed"] else ""
        print(f"{result['images']} images from {result['model']} in {result['out']}{how}")
        print(f"manifest {result['manifest']}")
    elif command == "models":
        for m in result["models"]:
            default = " (default)" if m["name"] == result["default"] else ""
            shape = "x".join(str(d) for d in m.get("image_shape") or [])
            print(f"{m['name']}{default}: {m['status']} {m.get('kind') or ''} {shape} on {m.get('provider')}")
    if result.get("saved"):
        print(f"saved {result['saved']}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ganserve", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--url", default=os.environ.get("GANSERVE_URL", "http://127.0.0.1:8000"),
                        help="service URL (default: $GANSERVE_URL or http://127.0.0.1:8000)")  # fmt: skip
    parser.add_argument(
        "--api-key", default=os.environ.get("GANSERVE_API_KEY"), help="API key ($GANSERVE_API_KEY)"
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("generate", help="sample images")
    p.add_argument("--model", help="model name (default: the service's default)")
    p.add_argument("-n", type=int, help="number of images")
    p.add_argument("--seed", type=int, help="base seed: image i uses seed + i")
    p.add_argument("--seeds", type=_seeds, help="explicit seeds, comma-separated")
    p.add_argument("--label", type=int, help="one label for every image (conditional models)")
    p.add_argument("--labels", type=int, nargs="+", help="one label per image")
    p.add_argument("--truncation", type=float, help="resample latent coordinates with |z| > t")
    p.add_argument("-o", "--out", type=Path, help="save a grid (.png) or an animation (.gif)")
    p.add_argument("--out-dir", type=Path, help="save each image into this folder")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("interpolate", help="walk the latent space between seeds")
    p.add_argument("--model", help="model name")
    p.add_argument("--from-seed", type=int, default=1, help="first keyframe's seed")
    p.add_argument("--to-seed", type=int, default=2, help="last keyframe's seed")
    p.add_argument("--seeds", type=_seeds, help="several keyframe seeds, comma-separated (overrides from/to)")
    p.add_argument("--from-label", type=int, help="label of the first keyframe (conditional models)")
    p.add_argument("--to-label", type=int, help="label of the last keyframe (morph the label)")
    p.add_argument("--labels", type=_seeds, help="one label per keyframe seed, comma-separated")
    p.add_argument("--steps", type=int, default=16, help="frames per segment")
    p.add_argument("--method", choices=["slerp", "lerp"], default="slerp", help="interpolation rule")
    p.add_argument("--duration-ms", type=int, default=80, help="GIF frame duration")
    p.add_argument("-o", "--out", type=Path, help="save a strip (.png) or an animation (.gif)")
    p.set_defaults(func=cmd_interpolate)

    p = sub.add_parser("arithmetic", help="latent vector arithmetic on averaged seeds")
    p.add_argument("--model", help="model name")
    p.add_argument("--plus", type=_seeds, action="append", default=[], help="a group of seeds to add (mean)")
    p.add_argument(
        "--minus", type=_seeds, action="append", default=[], help="a group of seeds to subtract (mean)"
    )
    p.add_argument("--label", type=int, help="output label (conditional models)")
    p.add_argument("--neighbors", type=int, default=0, help="extra samples around the result")
    p.add_argument("--seed", type=int, help="seed of the neighbours' noise")
    p.add_argument("-o", "--out", type=Path, help="save result + neighbours as a strip (.png)")
    p.set_defaults(func=cmd_arithmetic)

    p = sub.add_parser("score", help="realness and label of image files")
    p.add_argument("images", type=Path, nargs="+", help="PNG files")
    p.add_argument("--model", help="model whose discriminator and classifier score them")
    p.add_argument("--labels", type=int, nargs="+", help="intended labels, one per image")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("models", help="list the served models")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("dataset", help="write a synthetic dataset (.npz or ImageFolder) with a manifest")
    p.add_argument("out", type=Path, help="output: a .npz file, or a folder (one sub-folder per label)")
    p.add_argument("--from-manifest", type=Path, help="rebuild the dataset of this manifest, byte for byte")
    p.add_argument("--model", help="model name (default: the service's default)")
    p.add_argument("--per-label", type=int, help="images per label (conditional models)")
    p.add_argument("-n", type=int, help="images in all (unconditional models; or split evenly over labels)")
    p.add_argument("--labels", type=_seeds, help="labels to generate, comma-separated (default: all)")
    p.add_argument("--seed", type=int, default=0, help="image i uses seed + i (default 0)")
    p.add_argument("--truncation", type=float, help="resample latent coordinates with |z| > t")
    p.add_argument("--format", choices=["npz", "folder"], help="default: npz for a .npz output, else folder")
    p.add_argument("--chunk", type=int, default=256, help="images per request (<= the service's max_images)")
    p.add_argument("--concurrency", type=int, default=4, help="requests in flight")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=None)

    sub.add_parser("serve", help="start the service (same flags as `python -m service`)", add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "serve":  # everything after `serve` belongs to `python -m service`
        from .__main__ import main as serve

        serve(extra)
        return 0
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        if args.command == "dataset":
            result = cmd_dataset(args)
        else:
            with GanClient(args.url, timeout=args.timeout, api_key=args.api_key) as gan:
                result = args.func(gan, args)
    except (APIError, DatasetError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if args.command == "dataset":
            print("interrupted: the same command resumes from the chunks written", file=sys.stderr)
        return 130
    except GanServeError as exc:
        print(f"error: cannot reach {args.url}: {exc}", file=sys.stderr)
        return 3
    except OSError as exc:  # unreadable input file
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print_human(args.command, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
