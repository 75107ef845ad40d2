"""python -m training train|export|evaluate|toy ...

`python -m training train --preset mnist-cdcgan` trains the classifier and the GAN, exports
models/mnist-cdcgan and evaluates it: the shipped default model in one command.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from dataclasses import asdict, fields, replace
from pathlib import Path

import torch

from training.classifier import ClassifierConfig, load_classifier, save_classifier, train_classifier
from training.data import load_dataset, split
from training.train import TrainConfig, Trainer, distributed, load_checkpoint, train

ROOT = Path(__file__).resolve().parents[1]

# The shipped recipes: docs/STUDY.md says how they were chosen (each trains in under 30 minutes here).
PRESETS: dict[str, tuple[TrainConfig, str]] = {
    "mnist-cdcgan": (
        TrainConfig(dataset="mnist", conditional=True, epochs=20, mode_seeking=1.0, threads=2),
        "Conditional DCGAN (projection discriminator, mode-seeking term) on the 48,000-digit training split "
        "of MNIST",
    ),
    "mnist-dcgan": (
        TrainConfig(
            dataset="mnist",
            conditional=False,
            epochs=20,
            d_extra_layers=1,
            minibatch_stddev=True,
            label_smoothing=0.1,
            threads=2,
        ),
        "Unconditional DCGAN (D with an extra 3x3 layer and minibatch stddev, one-sided label smoothing) "
        "on the 48,000-digit training split of MNIST",
    ),
}


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool", bool):
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=None, help=f.metadata["help"]
            )
        else:
            kind = {"int": int, "float": float, "str": str}[
                f.type if isinstance(f.type, str) else f.type.__name__
            ]
            parser.add_argument(
                flag, type=kind, default=None, help=f"{f.metadata['help']} (default: {f.default})"
            )


def _config_from(args: argparse.Namespace, base: TrainConfig) -> TrainConfig:
    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if getattr(args, f.name) is not None}
    return replace(base, **given)


def _classifier(cfg: TrainConfig, run: Path, resume: bool):
    """Train (or reuse on --resume) the metrics classifier for the run's dataset and split."""
    path = run / "classifier.pt"
    data = load_dataset(cfg.dataset, cfg.image_size, cfg.channels)
    train_split, heldout = split(data, cfg.heldout_fraction, cfg.split_seed)
    if resume and path.exists():
        model, ckpt = load_classifier(path)
        return model, ckpt["heldout_accuracy"], train_split, heldout
    ccfg = ClassifierConfig(seed=cfg.seed)
    model, acc = train_classifier(train_split, heldout, ccfg)
    save_classifier(model, acc, ccfg, data.class_names, path)
    print(f"classifier held-out accuracy: {acc:.2%}")
    return model, acc, train_split, heldout


def export_and_evaluate(
    run: Path, out: Path, name: str, description: str, samples: int, command: str
) -> dict:
    from training.evaluate import evaluate, format_table, write_evaluation
    from training.export import export_model_dir

    state = load_checkpoint(run / "checkpoint.pt")
    cfg = TrainConfig.from_dict(state["config"])
    classifier, acc, train_split, heldout = _classifier(cfg, run, resume=True)
    trainer = Trainer(cfg, train_split)
    trainer.load_state(state)
    training = {
        "dataset": cfg.dataset,
        "train_images": len(train_split),
        "heldout_images": len(heldout),
        "loss": cfg.loss,
        "epochs": trainer.epoch_done,
        "seed": cfg.seed,
        "hyperparameters": asdict(cfg),
        "train_seconds": round(trainer.train_seconds, 1),
        "machine": f"CPU, torch {torch.__version__}, {torch.get_num_threads()} threads",
        "command": command,
        "classifier_heldout_accuracy": acc,
        "exported_generator": {
            "ema": "EMA of G's weights",
            "average": "average of G's last weights",
            "raw": "G",
        }[cfg.export_weights],
    }
    export_model_dir(
        out,
        name=name,
        G=trainer.exported_generator(),
        D=trainer.D,
        C=classifier,
        class_names=list(train_split.class_names),
        reference_images=heldout.images,
        training=training,
        description=description,
    )
    result = evaluate(
        out,
        heldout.images.numpy(),
        heldout.labels.numpy(),
        train_split.images.numpy(),
        train_split.labels.numpy(),
        n_samples=samples,
    )
    write_evaluation(out, result)
    print(format_table(result))
    return result


def _command(argv: list[str]) -> str:
    """The command that reproduces the result: --resume (same result as a fresh run) and --out (only
    where the model directory goes) are left out."""
    kept, skip = [], False
    for a in argv:
        if skip or a == "--resume" or a.startswith("--out="):
            skip = False
            continue
        skip = a == "--out"
        if not skip:
            kept.append(a)
    return "python -m training " + shlex.join(kept)


def cmd_train(args: argparse.Namespace) -> int:
    base, description = PRESETS[args.preset] if args.preset else (TrainConfig(), "")
    cfg = _config_from(args, base)
    name = args.name or args.preset or "model"
    run = args.run or Path("runs") / name
    if args.dry_run:
        train(cfg, run, dry_run=True)
        return 0
    main_rank = not distributed() or torch.distributed.get_rank() == 0  # under torchrun: rank 0 writes
    if main_rank:
        _classifier(cfg, run, resume=args.resume)
    train(cfg, run, resume=args.resume)
    if main_rank and (args.preset or args.export):
        out = args.out or ROOT / "models" / name
        export_and_evaluate(run, out, name, description, args.samples, _command(args.argv))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    name = args.name or args.run.name
    out = args.out or ROOT / "models" / name
    export_and_evaluate(args.run, out, name, args.description, args.samples, _command(args.argv))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from training.evaluate import evaluate, format_table, write_evaluation

    card = json.loads((args.model_dir / "model.json").read_text())
    hp = card.get("training", {}).get("hyperparameters", {})
    cfg = replace(
        TrainConfig(), **{k: v for k, v in hp.items() if k in {f.name for f in fields(TrainConfig)}}
    )
    if args.dataset:
        cfg = replace(cfg, dataset=args.dataset)
    train_split, heldout = split(
        load_dataset(cfg.dataset, cfg.image_size, cfg.channels), cfg.heldout_fraction, cfg.split_seed
    )
    result = evaluate(
        args.model_dir,
        heldout.images.numpy(),
        heldout.labels.numpy(),
        train_split.images.numpy(),
        train_split.labels.numpy(),
        n_samples=args.samples,
    )
    if not args.no_write:
        write_evaluation(args.model_dir, result)
    print(format_table(result))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a GAN (and its metrics classifier) into a run folder")
    p.add_argument(
        "--preset", choices=sorted(PRESETS), help="a shipped recipe: trains, exports and evaluates"
    )
    p.add_argument("--name", help="model name (default: the preset's, else `model`)")
    p.add_argument(
        "--run", type=Path, help="run folder for checkpoints, samples, curves (default: runs/NAME)"
    )
    p.add_argument("--out", type=Path, help="model directory to export to (default: models/NAME)")
    p.add_argument(
        "--export", action="store_true", help="export and evaluate after training (presets always do)"
    )
    p.add_argument("--resume", action="store_true", help="continue from the run folder's checkpoint.pt")
    p.add_argument("--dry-run", action="store_true", help="one training step on fake data, then stop")
    p.add_argument("--samples", type=int, default=1000, help="generated samples for the evaluation")
    _add_config_flags(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("export", help="export a run folder to a model directory and evaluate it")
    p.add_argument("run", type=Path, help="run folder holding checkpoint.pt")
    p.add_argument("--name", help="model name (default: the run folder's name)")
    p.add_argument("--out", type=Path, help="model directory (default: models/NAME)")
    p.add_argument("--description", default="", help="one line for the model card")
    p.add_argument("--samples", type=int, default=1000, help="generated samples for the evaluation")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("evaluate", help="FID, IS, label accuracy and diversity of a model directory")
    p.add_argument("model_dir", type=Path, help="a model directory (docs/MODEL_FORMAT.md)")
    p.add_argument("--dataset", help="real data to compare with (default: the card's training dataset)")
    p.add_argument("--samples", type=int, default=1000, help="generated samples")
    p.add_argument("--no-write", action="store_true", help="print only; leave model.json as it is")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("toy", help="toy experiments: 1-D Gaussian and the bilinear game", add_help=False)
    p.set_defaults(func=None)
    p = sub.add_parser("study", help="the recipe study: objectives x regularisers, 3 seeds", add_help=False)
    p.set_defaults(func=None)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["toy"]:
        from training.toy import main as toy_main

        return toy_main(argv[1:])
    if argv[:1] == ["study"]:
        from training.study import main as study_main

        return study_main(argv[1:])
    args = build_parser().parse_args(argv)
    args.argv = argv
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
