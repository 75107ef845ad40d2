"""The recipe study: objectives x regularisers on MNIST, same budget for every variant, N seeds each.

Every variant trains a DCGAN (conditional unless --unconditional) for the same budget: a number of
epochs, or with --minutes a wall-clock time (a cheaper step buys more steps). The generator is
exported to ONNX and evaluated by training/evaluate.py with a classifier trained once per study on
the same split (FID, IS, label accuracy, diversity, class mix). Writes OUT/results.json (resumable),
the table (mean +- std over seeds) as DOCS/results.md, a sample grid per variant and the loss curves;
docs/STUDY.md discusses them.

    python -m training study --minutes 8 --seeds 1 --threads 1 --variants "ns (default)" ...
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from modelformat import sha256_file as sha256
from training.classifier import ClassifierConfig, load_classifier, save_classifier, train_classifier
from training.data import load_dataset, split
from training.evaluate import evaluate
from training.export import export_classifier, export_generator, git_commit
from training.train import TrainConfig, Trainer, train

ROOT = Path(__file__).resolve().parents[1]
# A short budget: the EMA decay is shortened to match (0.999 suits the shipped recipes, but over a
# few hundred steps it would still remember the untrained generator). "ns, raw G" reuses the
# default training (only export_weights differs); "ns, avg G" keeps its own weight average.
BASE = TrainConfig(dataset="mnist", conditional=True, threads=2, ema_decay=0.99)
SN_TTUR = {"loss": "hinge", "spectral_norm": True, "d_norm": "none", "lr": 1e-4, "lr_d": 4e-4}

# name -> (what it tests, TrainConfig overrides)
VARIANTS: dict[str, tuple[str, dict]] = {
    "ns (default)": ("non-saturating, BN D, projection, EMA export", {}),
    "minimax": ("original saturating G loss", {"loss": "minimax"}),
    "hinge": ("hinge loss", {"loss": "hinge"}),
    "hinge + SN": (
        "hinge, spectral norm in D, no BN in D",
        {"loss": "hinge", "spectral_norm": True, "d_norm": "none"},
    ),
    "wgan-gp": (
        "WGAN-GP, lambda 10, 5 critic steps, Adam 1e-4 (0, 0.9), no BN in D",
        {"loss": "wgan-gp", "d_steps": 5, "lr": 1e-4, "beta1": 0.0, "beta2": 0.9, "d_norm": "none"},
    ),
    "wgan (clip)": (
        "WGAN with weight clipping 0.01, 5 critic steps, lr 5e-5",
        {"loss": "wgan", "d_steps": 5, "lr": 5e-5},
    ),
    "ns + mbstd": ("minibatch standard deviation in D", {"minibatch_stddev": True}),
    "ns + AC-GAN": ("auxiliary-classifier D instead of projection", {"conditioning": "acgan"}),
    "ns + smoothing": ("one-sided label smoothing 0.1", {"label_smoothing": 0.1}),
    "ns, raw G": ("the default recipe exported without EMA", {"export_weights": "raw"}),
    "ns, avg G": (
        "the default run exported as the average of the last 200 G steps",
        {"weight_average": 200, "export_weights": "average"},
    ),
    "hinge + SN + TTUR": ("hinge, SN, no BN in D; TTUR: G lr 1e-4, D lr 4e-4", SN_TTUR),
    "ns + R1": ("R1 penalty on real digits, gamma 1", {"r1_weight": 1.0}),
    "ns + DiffAug": (
        "DiffAugment translation (+-4 px) on D's real and fake inputs",
        {"augment": "translation"},
    ),
    "ns, D x2": ("discriminator twice as wide (ndf 128)", {"ndf": 128}),
    "ns, G / 2": ("generator half as wide (ngf 32): a cheaper step buys more steps", {"ngf": 32}),
    "ns, batch 128": ("batch 128 instead of 64", {"batch_size": 128}),
    "ns + mbstd, D x2": ("minibatch stddev and ndf 128", {"minibatch_stddev": True, "ndf": 128}),
    "ns + mode seeking": ("MSGAN's mode-seeking term, weight 1", {"mode_seeking": 1.0}),
    "ns + mbstd, D + 3x3": (
        "minibatch stddev and one extra 3x3 layer in D",
        {"minibatch_stddev": True, "d_extra_layers": 1},
    ),
}
COLLAPSE_DIVERSITY = 0.5  # mean fake/real diversity ratio below this counts as mode collapse


def _training_variant(name: str) -> str:
    """The first variant with the same training as `name` (they differ at most in export_weights)."""
    strip = {k: v for k, v in VARIANTS[name][1].items() if k != "export_weights"}
    return next(
        n for n, (_, o) in VARIANTS.items() if {k: v for k, v in o.items() if k != "export_weights"} == strip
    )


def _export_for_eval(trainer, out: Path, classifier_onnx: Path, class_names) -> None:
    """A minimal model directory: generator.onnx + the project's classifier.onnx + model.json."""
    out.mkdir(parents=True, exist_ok=True)
    export_generator(trainer.exported_generator(), out / "generator.onnx")
    shutil.copy(classifier_onnx, out / "classifier.onnx")
    files = {"generator": "generator.onnx", "classifier": "classifier.onnx"}
    g = trainer.gan
    card = {
        "format_version": 1,
        "name": out.name,
        "kind": "conditional" if g.conditional else "unconditional",
        "latent_dim": g.latent_dim,
        "num_classes": g.num_classes,
        "class_names": list(class_names),
        "image_shape": [g.channels, g.image_size, g.image_size],
        "value_range": [-1.0, 1.0],
        "files": files,
        "checksums": {f: sha256(out / f) for f in files.values()},
    }
    (out / "model.json").write_text(json.dumps(card, indent=2))


def study_classifier(out: Path, train_split, heldout) -> Path:
    """One metrics classifier per study (trained on the study's training split), as ONNX."""
    path, onnx = out / "classifier.pt", out / "classifier.onnx"
    if not path.exists():
        model, acc = train_classifier(train_split, heldout, ClassifierConfig())
        save_classifier(model, acc, ClassifierConfig(), train_split.class_names, path)
        print(f"study classifier held-out accuracy: {acc:.2%}")
    if not onnx.exists():
        export_classifier(load_classifier(path)[0], onnx)
    return onnx


def train_for(cfg: TrainConfig, run: Path, seconds: float, data) -> Trainer:
    """Train for a wall-clock budget (checked after every step), then save the final sample grid."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    (run / "samples").mkdir(parents=True, exist_ok=True)
    trainer = Trainer(cfg, data)
    start = time.perf_counter()
    bs, n = cfg.batch_size, len(data)
    while time.perf_counter() - start < seconds:
        perm = torch.randperm(n, generator=trainer.rng)
        for begin in range(0, n - bs + 1, bs):
            idx = perm[begin : begin + bs]
            trainer.train_step(data.images[idx], data.labels[idx])
            if time.perf_counter() - start >= seconds:
                break
    trainer.train_seconds = time.perf_counter() - start
    trainer.save_samples(run / "samples" / "final.png")
    history = np.asarray(trainer.history)
    per = max(1, len(history) // 20)  # 20 points of the loss curve for the loss sheet
    rows = [
        {
            "epoch": (i + per) / (n // bs),
            "loss_d": float(np.nanmean(history[i : i + per, 0])),
            "loss_g": float(np.nanmean(history[i : i + per, 1])),
        }
        for i in range(0, len(history) - per + 1, per)
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return trainer


def run_study(
    epochs: int,
    seeds: int,
    samples: int,
    out: Path,
    variants: list[str],
    minutes: float = 0.0,
    base: TrainConfig = BASE,
    classifier_dir: Path | None = None,
) -> dict:
    train_split, heldout = split(load_dataset(base.dataset), base.heldout_fraction, base.split_seed)
    classifier_onnx = study_classifier(classifier_dir or out, train_split, heldout)
    results = []
    results_path = out / "results.json"
    done = (
        {(r["variant"], r["seed"]): r for r in json.loads(results_path.read_text())}
        if results_path.exists()
        else {}
    )
    trained: dict[tuple, tuple] = {}  # runs that differ only in export_weights share one training
    for name in variants:
        _, overrides = VARIANTS[name]
        for seed in range(seeds):
            previous = done.get((name, seed), {})
            if previous.get("epochs") == epochs and previous.get("minutes", 0.0) == minutes:
                results.append(done[(name, seed)])
                continue
            cfg = replace(base, epochs=epochs, seed=seed, **overrides)
            key = (tuple(sorted((k, v) for k, v in overrides.items() if k != "export_weights")), seed)
            run = _run_dir(out, _training_variant(name), seed)  # variants that differ only in export share it
            if key in trained:
                trainer, seconds = trained[key]
                trainer.cfg = cfg  # same training; only the exported weights differ
            elif minutes:
                trainer = train_for(cfg, run, minutes * 60, train_split)
                seconds = trainer.train_seconds
                trained[key] = (trainer, seconds)
            else:
                start = time.perf_counter()
                trainer = train(cfg, run, resume=(run / "checkpoint.pt").exists())  # resumes a cut-off study
                seconds = trainer.train_seconds or time.perf_counter() - start
                trained[key] = (trainer, seconds)
            history = np.asarray(trainer.history)
            finite = bool(
                np.isfinite(history[:, 0]).all()
                and np.isfinite(history[:, 1][~np.isnan(history[:, 1])]).all()
            )
            record = {
                "variant": name,
                "seed": seed,
                "epochs": epochs,
                "minutes": minutes,
                "train_seconds": round(seconds, 1),
                "steps": trainer.step,
                "steps_per_s": round(trainer.step / max(seconds, 1e-9), 2),
                "conditional": cfg.conditional,
                "finite": finite,
            }
            if finite:
                _export_for_eval(trainer, run / "model", classifier_onnx, train_split.class_names)
                ev = evaluate(
                    run / "model",
                    heldout.images.numpy(),
                    heldout.labels.numpy(),
                    train_split.images.numpy(),
                    train_split.labels.numpy(),
                    n_samples=samples,
                )
                record |= {
                    "fid": ev["fid"]["model"],
                    "fid_real": ev["fid"]["real_baseline"],
                    "is": ev["inception_score"]["model"]["mean"],
                    "is_real": ev["inception_score"]["real_baseline"]["mean"],
                    "label_accuracy": ev["label_accuracy"]["model"] if cfg.conditional else None,
                    "diversity": ev["diversity"]["ratio_mean"],
                    "diversity_min": ev["diversity"]["ratio_min"],
                    "diversity_heldout": ev["diversity"]["heldout_ratio_mean"],
                    "class_share_min": min(ev["class_histogram"]) / samples,
                    "class_share_max": max(ev["class_histogram"]) / samples,
                }

                record["collapsed"] = bool(record["diversity"] < COLLAPSE_DIVERSITY)
            results.append(record)
            done[(name, seed)] = record
            results_path.write_text(json.dumps(list(done.values()), indent=2))
    return {"epochs": epochs, "minutes": minutes, "seeds": seeds, "samples": samples, "runs": results}


def _mean_std(values) -> str:
    v = np.asarray([x for x in values if x is not None], dtype=float)
    if len(v) < 2:
        return f"{v[0]:.3g}" if len(v) else "n/a"
    return f"{v.mean():.3g} +- {v.std():.2g}"


def write_report(study: dict, out: Path, docs: Path) -> tuple[str, str]:
    docs.mkdir(parents=True, exist_ok=True)
    runs = study["runs"]
    names = list(dict.fromkeys(r["variant"] for r in runs))
    lines = [
        "| variant | what | FID (lower better) | IS | label accuracy | diversity fake/real (min class) "
        "| class share min-max | diverged / collapsed | steps (steps/s) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name in names:
        rs = [r for r in runs if r["variant"] == name]
        ok = [r for r in rs if r["finite"]]
        cells = [name, VARIANTS[name][0]]
        cells += [_mean_std(r[key] for r in ok) for key in ("fid", "is", "label_accuracy")]
        cells.append(
            f"{_mean_std(r['diversity'] for r in ok)} ({_mean_std(r.get('diversity_min') for r in ok)})"
        )
        shares = [_mean_std(r.get(f"class_share_{end}") for r in ok) for end in ("min", "max")]
        cells.append(" - ".join(shares))
        cells.append(
            f"{sum(not r['finite'] for r in rs)} / {sum(r.get('collapsed', False) for r in ok)} of {len(rs)}"
        )
        cells.append(
            f"{_mean_std(r.get('steps') for r in rs)} ({_mean_std(r.get('steps_per_s') for r in rs)})"
        )
        lines.append("| " + " | ".join(cells) + " |")
    ref = next((r for r in runs if r["finite"]), None)
    baseline = (
        f"Real-data baselines (train images vs the held-out reference, same classifier): FID "
        f"{ref['fid_real']:.2f}, IS {ref['is_real']:.2f}."
        if ref
        else ""
    )
    _grid_sheet(names, out, docs / "samples.png")
    _loss_sheet(names, out, docs / "losses.png")
    (docs / "results.json").write_text(json.dumps(study, indent=2))
    per_run = f"{study['minutes']:g} minutes" if study.get("minutes") else f"{study['epochs']} epochs"
    budget = f"Budget: {per_run} per run, {study['seeds']} seeds, {study['samples']} samples each."
    (docs / "results.md").write_text("\n".join(lines) + f"\n\n{baseline}\n\n{budget}\n")
    return "\n".join(lines), baseline


def _run_dir(out: Path, name: str, seed: int) -> Path:
    return out / f"{name.replace(' ', '_').replace('+', 'p').replace(',', '')}-s{seed}"


def _grid_sheet(names: list[str], out: Path, path: Path) -> None:
    """The last epoch's sample grid (seed 0) of every variant, side by side with its name."""
    tiles = []
    for name in names:
        grids = sorted((_run_dir(out, name, 0) / "samples").glob("*.png"))  # epoch_NNN.png, or final.png
        if grids:
            img = Image.open(grids[-1]).convert("L")
            img = img.resize((img.width // 2, img.height // 2))
            canvas = Image.new("L", (img.width, img.height + 16), 255)
            canvas.paste(img, (0, 16))
            ImageDraw.Draw(canvas).text((2, 2), name, fill=0)
            tiles.append(canvas)
    if not tiles:
        return
    cols = 4
    w, h = tiles[0].size
    sheet = Image.new("L", (cols * w, -(-len(tiles) // cols) * h), 255)
    for i, t in enumerate(tiles):
        sheet.paste(t, ((i % cols) * w, (i // cols) * h))
    sheet.save(path)


def _loss_sheet(names: list[str], out: Path, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for name in names:
        ckpt = _run_dir(out, name, 0) / "metrics.jsonl"
        if ckpt.exists():
            rows = [json.loads(line) for line in ckpt.read_text().splitlines()]
            epochs = [r["epoch"] for r in rows]
            axes[0].plot(epochs, [r["loss_d"] for r in rows], label=name)
            axes[1].plot(epochs, [r["loss_g"] for r in rows], label=name)
    axes[0].set_title("D loss per epoch (seed 0)")
    axes[1].set_title("G loss per epoch (seed 0)")
    for ax in axes:
        ax.set_xlabel("epoch")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training study", description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=6, help="budget per run, in passes over the data")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per variant")
    parser.add_argument("--samples", type=int, default=1000, help="generated samples per evaluation")
    parser.add_argument("--out", type=Path, default=Path("runs/study"), help="run folders and results.json")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs" / "study", help="table and figures")
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), help="subset of variants (names)")
    parser.add_argument(
        "--minutes", type=float, default=0.0, help="wall-clock budget per run instead of epochs"
    )
    parser.add_argument("--unconditional", action="store_true", help="study the unconditional DCGAN")
    parser.add_argument("--dataset", default=BASE.dataset, help="`mnist` (60,000 digits) or `mnist-5k`")
    parser.add_argument("--threads", type=int, default=BASE.threads, help="torch threads per run")
    parser.add_argument("--ema-decay", type=float, default=BASE.ema_decay, help="EMA decay of every variant")
    parser.add_argument("--classifier-dir", type=Path, help="share one study classifier (default: --out)")
    args = parser.parse_args(argv)
    unknown = set(args.variants) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}; choose from {list(VARIANTS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    base = replace(
        BASE,
        dataset=args.dataset,
        conditional=not args.unconditional,
        threads=args.threads,
        ema_decay=args.ema_decay,
    )
    study = run_study(
        args.epochs,
        args.seeds,
        args.samples,
        args.out,
        args.variants,
        args.minutes,
        base,
        args.classifier_dir,
    )
    table, baseline = write_report(study, args.out, args.docs)
    print(table)
    print(baseline)
    print(f"git commit {git_commit()}")
    return 0
