"""`python -m service.triton MODELS OUT`: the same ONNX files as a Triton Inference Server model
repository, for teams that already run Triton.

Why a copy and a config, nothing more: Triton's onnxruntime backend runs ganserve's networks as
they are. For every model directory (docs/MODEL_FORMAT.md) it writes

    OUT/<model>/config.pbtxt                  the generator: z (and y) -> image
    OUT/<model>/<version>/model.onnx          a copy of generator.onnx (a copy, never a link)
    OUT/<model>-discriminator/...             image (and y) -> logit, when the model has one
    OUT/<model>-classifier/...                image -> logits, features (+ labels.txt)

Batching follows ganserve's batcher settings (`GANSERVE_*`, service/settings.py), so Triton
batches as the service would: `max_batch_size` -> max_batch_size, `max_queue_delay_ms` ->
dynamic_batching's max_queue_delay_microseconds, `inference_threads` (calls in flight per
session) -> the instance count, `intra_op_threads` -> the backend's intra_op_thread_count.
Inputs and outputs come from the ONNX graph itself (ONNX Runtime's session, so the service never
imports `onnx`), after the card's checksums and the contract's signatures are checked.
Layouts: `models/<name>/` becomes version `--version` (1); versioned folders
`models/<name>/<N>/` (Triton's layout) keep their integer versions.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort

from modelformat import (
    CARD_FILE,
    ContractError,
    ModelCard,
    Signature,
    check_signature,
    read_card,
    verify_files,
)
from modelformat.signatures import LOGITS, NETWORKS, TensorSpec

from .settings import Settings

# numpy dtype names (modelformat.signatures) -> Triton's DataType names (model_config.proto)
TRITON_TYPES = {
    "bool": "TYPE_BOOL",
    "uint8": "TYPE_UINT8",
    "int8": "TYPE_INT8",
    "int16": "TYPE_INT16",
    "int32": "TYPE_INT32",
    "int64": "TYPE_INT64",
    "float16": "TYPE_FP16",
    "float32": "TYPE_FP32",
    "float64": "TYPE_FP64",
}
LABELS_FILE = "labels.txt"


class ExportError(ValueError):
    """A model that cannot become a Triton model; the message names the file."""


@dataclass(frozen=True)
class Batching:
    """What Triton's config takes from ganserve's batcher settings."""

    max_batch_size: int
    max_queue_delay_us: int
    instances: int  # per device
    intra_op_threads: int  # 0: ONNX Runtime's default

    @classmethod
    def from_settings(cls, settings: Settings) -> Batching:
        return cls(
            max_batch_size=settings.max_batch_size,
            max_queue_delay_us=round(settings.max_queue_delay_ms * 1000),
            instances=settings.inference_threads,
            intra_op_threads=settings.intra_op_threads,
        )


def triton_name(model: str, network: str) -> str:
    """The generator keeps the model's name (what a client asks for); the others get a suffix."""
    return model if network == "generator" else f"{model}-{network}"


def graph_signature(path: Path) -> Signature:
    """Inputs and outputs as the ONNX graph declares them (-1: a dynamic axis)."""
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # ONNX Runtime raises its own exception types
        raise ExportError(f"{path}: ONNX Runtime cannot load it ({exc})") from exc
    return Signature.of_session(session)


def _tensor_block(t: TensorSpec, where: str, label_filename: str | None = None) -> str:
    """One input or output entry. Triton's dims leave out the batch axis; a tensor that is only
    the batch axis (the discriminator's logit [N]) is declared [1] and reshaped to []."""
    if t.dtype not in TRITON_TYPES:
        raise ExportError(f"{where}: tensor {t.name!r} has type {t.dtype}, which Triton has no type for")
    dims = list(t.shape[1:])
    lines = [f'    name: "{t.name}"', f"    data_type: {TRITON_TYPES[t.dtype]}"]
    if dims:
        lines.append(f"    dims: [ {', '.join(map(str, dims))} ]")
    else:
        lines += ["    dims: [ 1 ]", "    reshape: { shape: [ ] }"]
    if label_filename:
        lines.append(f'    label_filename: "{label_filename}"')
    return "  {\n" + "\n".join(lines) + "\n  }"


def model_config(
    name: str,
    signature: Signature,
    batching: Batching,
    *,
    device: str = "cpu",
    gpus: list[int] | None = None,
    labels: bool = False,
    source: str = "",
) -> str:
    """config.pbtxt text for one network (Triton's ModelConfig in protobuf text format)."""
    for t in (*signature.inputs, *signature.outputs):
        if t.shape[:1] != (-1,):
            raise ExportError(f"{source}: tensor {t.name!r} has a fixed batch axis; Triton batching needs -1")
    inputs = ",\n".join(_tensor_block(t, source) for t in signature.inputs)
    outputs = ",\n".join(
        _tensor_block(t, source, LABELS_FILE if labels and t.name == LOGITS else None)
        for t in signature.outputs
    )
    group = [f"    count: {batching.instances}", f"    kind: {'KIND_GPU' if device == 'gpu' else 'KIND_CPU'}"]
    if device == "gpu" and gpus:
        group.append(f"    gpus: [ {', '.join(map(str, gpus))} ]")
    text = [
        f"# Written by `python -m service.triton` from {source}.",
        f'name: "{name}"',
        'backend: "onnxruntime"',
        f"max_batch_size: {batching.max_batch_size}",
        f"input [\n{inputs}\n]",
        f"output [\n{outputs}\n]",
        f"dynamic_batching {{\n  max_queue_delay_microseconds: {batching.max_queue_delay_us}\n}}",
        "instance_group [\n  {\n" + "\n".join(group) + "\n  }\n]",
    ]
    if batching.intra_op_threads:
        text.append(
            'parameters {\n  key: "intra_op_thread_count"\n'
            f'  value: {{ string_value: "{batching.intra_op_threads}" }}\n}}'
        )
    return "\n".join(text) + "\n"


def model_sources(models_dir: Path, version: int) -> list[tuple[str, int, Path]]:
    """(name, Triton version, model directory) for each model under `models_dir`: a folder with
    model.json is one version (`version`); a folder of integer-named folders is one per version."""
    found = []
    for folder in sorted(p for p in models_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if (folder / CARD_FILE).is_file():
            found.append((folder.name, version, folder))
            continue
        for sub in sorted(
            (p for p in folder.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name)
        ):
            if (sub / CARD_FILE).is_file():
                found.append((folder.name, int(sub.name), sub))
    return found


def export_model(
    model_dir: Path,
    name: str,
    version: int,
    out: Path,
    batching: Batching,
    *,
    device: str = "cpu",
    gpus: list[int] | None = None,
    networks: tuple[str, ...] = NETWORKS,
) -> list[Path]:
    """Write the Triton models of one model directory (version); returns their folders."""
    try:
        card: ModelCard = read_card(model_dir, name)
        verify_files(model_dir, card)  # never copy a file the card does not vouch for
    except ContractError as exc:
        raise ExportError(str(exc)) from None
    written = []
    for network in networks:
        if network not in card.files:
            continue
        source = model_dir / card.files[network]
        signature = graph_signature(source)
        problems = check_signature(card.signature(network), signature)
        if problems:
            raise ExportError(f"{name}/{source.name}: " + "; ".join(problems))
        target = out / triton_name(name, network)
        labels = network == "classifier" and bool(card.class_names)  # K = len(class_names), checked
        (target / str(version)).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target / str(version) / "model.onnx")  # bytes, not a link
        (target / "config.pbtxt").write_text(
            model_config(
                triton_name(name, network),
                signature,
                batching,
                device=device,
                gpus=gpus,
                labels=labels,
                source=f"{name}/{source.name} ({card.checksums[source.name]})",
            )
        )
        if labels:
            (target / LABELS_FILE).write_text("\n".join(card.class_names) + "\n")
        written.append(target)
    return written


def export_repository(
    models_dir: Path,
    out: Path,
    batching: Batching,
    *,
    version: int = 1,
    device: str = "cpu",
    gpus: list[int] | None = None,
    networks: tuple[str, ...] = NETWORKS,
    force: bool = False,
) -> list[Path]:
    """Export every model under `models_dir` into the Triton repository `out`. All of it is
    written into a staging folder first, so a model that fails leaves `out` as it was. With
    several versions of a model, the newest one's signature writes config.pbtxt."""
    sources = model_sources(models_dir, version)
    if not sources:
        raise ExportError(f"{models_dir}: no model directories (a folder with {CARD_FILE})")
    names = sorted({triton_name(n, net) for n, _, _ in sources for net in networks})
    clash = [n for n in names if (out / n).exists()]
    if clash and not force:
        raise ExportError(f"{out}: {', '.join(clash)} already exist(s); pass --force to replace")
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".ganserve-export-", dir=out))
    try:
        written = set()
        for name, ver, model_dir in sources:
            written.update(
                p.name
                for p in export_model(
                    model_dir, name, ver, staging, batching, device=device, gpus=gpus, networks=networks
                )
            )
        for n in sorted(written):
            if (out / n).exists():
                shutil.rmtree(out / n)
            (staging / n).rename(out / n)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [out / n for n in sorted(written)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m service.triton",
        description="Write a Triton Inference Server model repository (config.pbtxt + a copy of each "
        "ONNX file) from ganserve model directories. Batching comes from the GANSERVE_* settings: "
        "GANSERVE_MAX_BATCH_SIZE, GANSERVE_MAX_QUEUE_DELAY_MS, GANSERVE_INFERENCE_THREADS "
        "(instances per device), GANSERVE_INTRA_OP_THREADS.",
    )
    parser.add_argument("models", type=Path, help="the model directories' root (e.g. models/)")
    parser.add_argument("out", type=Path, help="the Triton model repository to write (created if missing)")
    parser.add_argument(
        "--device",
        choices=["cpu", "gpu"],
        default="cpu",
        help="instance group kind: KIND_CPU or KIND_GPU (default cpu)",
    )
    parser.add_argument(
        "--gpus", help="with --device gpu: comma-separated GPU indices for the instances (default: every GPU)"
    )
    parser.add_argument(
        "--version", type=int, default=1, help="Triton version for flat model folders (default 1)"
    )
    parser.add_argument(
        "--networks",
        default=",".join(NETWORKS),
        help=f"which networks to export, comma-separated (default {','.join(NETWORKS)})",
    )
    parser.add_argument(
        "--force", action="store_true", help="replace Triton models that already exist in OUT"
    )
    args = parser.parse_args(argv)
    networks = tuple(n.strip() for n in args.networks.split(",") if n.strip())
    unknown = sorted(set(networks) - set(NETWORKS))
    if unknown or not networks:
        parser.error(f"--networks: {', '.join(unknown) or 'none given'}; choose from {', '.join(NETWORKS)}")
    if args.gpus and args.device != "gpu":
        parser.error("--gpus needs --device gpu")
    try:
        gpus = [int(g) for g in args.gpus.split(",")] if args.gpus else None
    except ValueError:
        parser.error(f"--gpus: {args.gpus!r} is not a comma-separated list of integers")
    if args.version < 1:
        parser.error("--version must be >= 1 (Triton's versions are positive integers)")
    if not args.models.is_dir():
        parser.error(f"{args.models}: not a directory")
    try:
        written = export_repository(
            args.models,
            args.out,
            Batching.from_settings(Settings()),
            version=args.version,
            device=args.device,
            gpus=gpus,
            networks=networks,
            force=args.force,
        )
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
