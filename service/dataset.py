"""Bulk synthetic datasets through a running service (`ganserve dataset`; SDK: `build_dataset`).

    ganserve dataset digits.npz --per-label 2000 --seed 0        # 20,000 images, labels 0..9
    ganserve dataset digits/ --per-label 2000 --format folder     # an ImageFolder tree of PNGs
    ganserve dataset again.npz --from-manifest digits.manifest.json   # the same bytes again

The plan: image i (0 <= i < count) has seed `seed + i` and, for a conditional model, label
`labels[i // per_label]` (by default every class in order, `per_label` images each). Chunks of
`chunk` images, one `/generate` request each in the raw `.npy` format (no PNG on either side),
run `concurrency` at a time; each finished chunk is written to `OUT.parts/` atomically, so memory
holds at most `concurrency` chunks and an interrupted run resumes from the chunks on disk (the
parts directory keeps the plan; a different plan there is an error, never a silent mix). At the
end the chunks are joined, one at a time, into the output: an `.npz` (`images` uint8
[N, H, W(, C)], `labels` int64 (-1 for an unconditional model), `seeds` int64) written with fixed
zip timestamps, or a folder `OUT/<label>/<index>_seed<seed>.png`; then the manifest (model name,
version, generator sha256, seed range, labels, the latent rule, the command) and the parts go.

Why it reproduces byte for byte: an image depends only on (model file, seed, label) under the
latent rule (`modelformat.latent`), never on its batch; the manifest pins all three, and a rebuild
refuses a service whose generator's sha256 differs. 503s are retried by the SDK (Retry-After).
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import zipfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
from PIL import Image

from modelformat.latent import RULE as LATENT_RULE

from .client import AsyncGanClient

MANIFEST_VERSION = 1
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed entry timestamps: the same images give the same bytes


class DatasetError(Exception):
    """The dataset cannot be built as asked (plan mismatch, model changed, output exists)."""


@dataclass(frozen=True)
class Plan:
    """Everything that decides the dataset's bytes (and how it is fetched: chunk size)."""

    model: str
    model_version: str | None
    generator_sha256: str | None
    image_shape: tuple[int, ...]  # (C, H, W)
    seed: int
    count: int
    per_label: int | None  # conditional models: images per label
    labels: tuple[int, ...] | None  # conditional models: the labels, in order
    truncation: float | None
    format: str  # "npz" or "folder"
    chunk: int
    latent_rule: str = LATENT_RULE

    @property
    def chunks(self) -> int:
        return -(-self.count // self.chunk)

    def span(self, c: int) -> range:
        """The image indices of chunk `c`."""
        return range(c * self.chunk, min(self.count, (c + 1) * self.chunk))

    def label_of(self, i: int) -> int:
        return -1 if self.labels is None else self.labels[i // self.per_label]

    def to_json(self) -> dict:
        return asdict(self) | {"image_shape": list(self.image_shape), "labels": _maybe_list(self.labels)}

    @classmethod
    def from_json(cls, data: dict) -> Plan:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise DatasetError(f"manifest: unknown plan fields {sorted(unknown)}")
        data = dict(data)
        data["image_shape"] = tuple(data["image_shape"])
        data["labels"] = None if data.get("labels") is None else tuple(data["labels"])
        return cls(**data)

    def command(self, out: Path) -> str:
        """The command line that builds this plan."""
        parts = ["ganserve dataset", str(out), f"--model {self.model}", f"--seed {self.seed}"]
        if self.labels is None:
            parts.append(f"-n {self.count}")
        else:
            parts += [f"--per-label {self.per_label}", "--labels " + ",".join(map(str, self.labels))]
        if self.truncation is not None:
            parts.append(f"--truncation {self.truncation}")
        parts += [f"--format {self.format}", f"--chunk {self.chunk}"]
        return " ".join(parts)


def _maybe_list(x):
    return None if x is None else list(x)


def parts_dir(out: Path) -> Path:
    return out.parent / (out.name + ".parts")


def manifest_path(out: Path, fmt: str) -> Path:
    return out / "manifest.json" if fmt == "folder" else out.with_name(out.stem + ".manifest.json")


async def make_plan(
    gan: AsyncGanClient,
    *,
    model: str | None = None,
    n: int | None = None,
    per_label: int | None = None,
    labels: list[int] | None = None,
    seed: int = 0,
    truncation: float | None = None,
    fmt: str = "npz",
    chunk: int = 256,
) -> Plan:
    """The plan for a model of the service: `per_label` images per label (conditional models) or
    `n` in all (either kind; for a conditional model `n` must split evenly over the labels)."""
    name = model or (await gan.models()).default
    if name is None:
        raise DatasetError("the service has no default model: name one with --model")
    info = await gan.model(name)
    card = info.card or {}
    k = info.num_classes or 0
    if chunk < 1 or seed < 0:
        raise DatasetError("chunk must be >= 1 and seed >= 0")
    if fmt not in ("npz", "folder"):
        raise DatasetError(f"format must be npz or folder, got {fmt!r}")
    if k:
        labels = list(range(k)) if labels is None else labels
        if any(not 0 <= lab < k for lab in labels):
            raise DatasetError(f"labels must be in 0..{k - 1}")
        if per_label is None:
            if n is None or n % len(labels):
                raise DatasetError(f"give --per-label, or -n divisible by the {len(labels)} labels")
            per_label = n // len(labels)
        count = per_label * len(labels)
    else:
        if labels is not None or per_label is not None:
            raise DatasetError(f"model {name!r} is unconditional: give -n, not labels or --per-label")
        if n is None:
            raise DatasetError("give -n (images in all) for an unconditional model")
        count, labels = n, None
    if count < 1:
        raise DatasetError("the plan holds no image")
    return Plan(
        model=name,
        model_version=info.version,
        generator_sha256=(card.get("checksums") or {}).get(card.get("files", {}).get("generator", "")),
        image_shape=tuple(info.image_shape or ()),
        seed=seed,
        count=count,
        per_label=per_label if labels is not None else None,
        labels=None if labels is None else tuple(labels),
        truncation=truncation,
        format=fmt,
        chunk=chunk,
    )


async def check_model(gan: AsyncGanClient, plan: Plan) -> None:
    """A rebuild only on the same generator file: else the bytes would differ."""
    info = await gan.model(plan.model)
    card = info.card or {}
    sha = (card.get("checksums") or {}).get(card.get("files", {}).get("generator", ""))
    if sha != plan.generator_sha256:
        raise DatasetError(
            f"model {plan.model!r}: the service's generator is {sha}, the manifest's {plan.generator_sha256}"
        )


def _chunk_file(parts: Path, c: int) -> Path:
    return parts / f"chunk-{c:07d}.npy"


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, array, allow_pickle=False)
    return buf.getvalue()


def _open_parts(out: Path, plan: Plan) -> Path:
    """The parts directory with this plan in it (new, or left by an interrupted run of it)."""
    parts = parts_dir(out)
    plan_file = parts / "plan.json"
    if plan_file.exists():
        if Plan.from_json(json.loads(plan_file.read_text())) != plan:
            raise DatasetError(f"{parts} holds the parts of another plan: remove it, or repeat that command")
    else:
        parts.mkdir(parents=True, exist_ok=True)
        _write_atomic(plan_file, json.dumps(plan.to_json(), indent=2).encode())
    return parts


async def _fetch(gan: AsyncGanClient, plan: Plan, c: int) -> np.ndarray:
    span = plan.span(c)
    labels = None if plan.labels is None else [plan.label_of(i) for i in span]
    got = await gan.generate_array(
        model=plan.model, seed=plan.seed + span.start, n=len(span), labels=labels, truncation=plan.truncation
    )
    want_seeds = [plan.seed + i for i in span]
    if got.seeds != want_seeds or (labels is not None and got.labels != labels) or len(got) != len(span):
        raise DatasetError(f"chunk {c}: the reply's seeds or labels are not the ones asked for")
    return got.images


async def _fetch_all(gan: AsyncGanClient, plan: Plan, parts: Path, concurrency: int, progress: bool) -> None:
    from tqdm import tqdm

    todo = [c for c in range(plan.chunks) if not _chunk_file(parts, c).exists()]
    done = plan.count - sum(len(plan.span(c)) for c in todo)
    bar = tqdm(total=plan.count, initial=done, unit="img", desc=plan.model, disable=not progress)
    queue = iter(todo)

    async def worker() -> None:
        for c in queue:  # one shared iterator: each chunk goes to one worker
            images = await _fetch(gan, plan, c)
            await asyncio.to_thread(_write_atomic, _chunk_file(parts, c), _npy(images))
            bar.update(len(images))

    try:
        await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
    finally:
        bar.close()


def _seeds_labels(plan: Plan) -> tuple[np.ndarray, np.ndarray]:
    seeds = np.arange(plan.seed, plan.seed + plan.count, dtype=np.int64)
    if plan.labels is None:
        return seeds, np.full(plan.count, -1, np.int64)
    return seeds, np.repeat(np.asarray(plan.labels, np.int64), plan.per_label)


def _image_shape(plan: Plan) -> tuple[int, ...]:
    c, h, w = plan.image_shape
    return (h, w) if c == 1 else (h, w, c)


def _write_npz(out: Path, plan: Plan, parts: Path) -> None:
    """Join the chunks into one .npz, a chunk at a time (zip64, stored, fixed timestamps)."""
    tmp = out.with_name(out.name + ".tmp")
    seeds, labels = _seeds_labels(plan)
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        with zf.open(zipfile.ZipInfo("images.npy", _ZIP_TIME), "w", force_zip64=True) as f:
            header = {"descr": "|u1", "fortran_order": False, "shape": (plan.count, *_image_shape(plan))}
            np.lib.format.write_array_header_1_0(f, header)
            for c in range(plan.chunks):
                f.write(np.load(_chunk_file(parts, c), allow_pickle=False).tobytes())
        for name, array in (("labels.npy", labels), ("seeds.npy", seeds)):
            with zf.open(zipfile.ZipInfo(name, _ZIP_TIME), "w") as f:
                f.write(_npy(array))
    os.replace(tmp, out)


def _png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def _write_folder(out: Path, plan: Plan, parts: Path) -> None:
    """ImageFolder: one sub-folder per label (`all` for an unconditional model), a PNG per image."""
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for c in range(plan.chunks):
        images = np.load(_chunk_file(parts, c), allow_pickle=False)
        for i, image in zip(plan.span(c), images, strict=True):
            label = plan.label_of(i)
            folder = tmp / (str(label) if label >= 0 else "all")
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{i:07d}_seed{plan.seed + i}.png").write_bytes(_png(image))
    os.replace(tmp, out)


def write_manifest(out: Path, plan: Plan) -> Path:
    path = manifest_path(out, plan.format)
    manifest = {
        "ganserve_dataset": MANIFEST_VERSION,
        "plan": plan.to_json(),
        "seed_range": [plan.seed, plan.seed + plan.count],  # [first, stop)
        "command": plan.command(out),
        "rebuild": f"ganserve dataset {out} --from-manifest {path}",
    }
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    return path


def read_manifest(path: Path) -> Plan:
    data = json.loads(Path(path).read_text())
    if data.get("ganserve_dataset") != MANIFEST_VERSION:
        raise DatasetError(f"{path}: not a ganserve dataset manifest (version {MANIFEST_VERSION})")
    return Plan.from_json(data["plan"])


async def build_dataset(
    gan: AsyncGanClient, plan: Plan, out: Path, *, concurrency: int = 4, progress: bool = True
) -> Path:
    """Fetch (or resume) and write the dataset of `plan` at `out`; returns the manifest's path."""
    out = Path(out)
    if out.exists():
        raise DatasetError(f"{out} exists: choose another output or remove it")
    await check_model(gan, plan)
    parts = _open_parts(out, plan)
    await _fetch_all(gan, plan, parts, concurrency, progress)
    await asyncio.to_thread(_write_npz if plan.format == "npz" else _write_folder, out, plan, parts)
    manifest = write_manifest(out, plan)
    shutil.rmtree(parts)
    return manifest
