"""In-process references for the goals: the service's work on one batch, without HTTP.

Three kinds of work per call of `batch` rows, each with the service's own code:
- `ort`: ONNX Runtime alone on fixed feeds;
- `png`: the whole work of a JSON reply: z from one seed per image and the labels drawn from the
  seeds (`service.latent`, the contract's rule), one-hot `y`, ONNX Runtime, PNG + base64
  (`service.imaging`);
- `raw`: the same with the `.npy` reply instead of PNG: uint8 (n, h, w) for one channel,
  (n, h, w, c) otherwise, written by numpy's `.npy` writer.

Each in two layouts: `1x<cores>` (one caller, intra_op = cores) and `<callers>x1` (callers threads
on one session at intra_op 1, the service's default). A goal is held against the faster layout
(`best`). Sessions come from `service.registry._session`, as in the service.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import statistics
from pathlib import Path

import numpy as np

from service import imaging, latent
from service.registry import _session, choose_providers
from service.settings import Settings

from .ort_ceiling import _feeds, _measure

KINDS = ("ort", "png", "raw")


def npy_bytes(images: np.ndarray) -> bytes:
    """float [N, C, H, W] -> the `.npy` reply body: uint8 (N, H, W) for one channel, else (N, H, W, C)."""
    u8 = imaging.to_uint8(images)
    if u8.shape[3] == 1:
        u8 = u8[..., 0]
    buf = io.BytesIO()
    np.lib.format.write_array(buf, u8, allow_pickle=False)
    return buf.getvalue()


def work_fn(kind: str, card: dict, run, batch: int):
    """A function doing one call's work of `kind` (returns the images done). Seeds move on with
    every call, as the service's random base seeds do."""
    k = card.get("num_classes") or 0
    if kind == "ort":
        feeds = _feeds(card, batch, np.random.default_rng(0))
        return lambda: (run(None, feeds), batch)[1]
    encode = imaging.png_b64_rows if kind == "png" else npy_bytes
    bases = itertools.count(0, batch)  # next() is atomic under the GIL: threads never share seeds

    def work() -> int:
        base = next(bases)
        z, drawn = latent.latents_for_seeds(range(base, base + batch), card["latent_dim"], k)
        feeds = {"z": z}
        if k:
            feeds["y"] = latent.one_hot(drawn, k)
        encode(run(None, feeds)[0])
        return batch

    return work


def measure(
    model_dir: Path,
    kinds=KINDS,
    batches=(64,),
    provider: str = "cpu",
    seconds: float = 1.0,
    repeats: int = 3,
    callers: int = 2,
    log=print,
) -> dict:
    """{'images_per_s': {line: {batch: v}}, 'per_cpu_s': {...}} for lines `<kind>_<layout>`."""
    cores = os.cpu_count() or 1
    card = json.loads((Path(model_dir) / "model.json").read_text())  # the fields the bench needs
    path = Path(model_dir) / card["files"]["generator"]
    providers = choose_providers(provider)
    layouts = {f"1x{cores}": (cores, 1), f"{callers}x1": (1, callers)}
    rate: dict[str, dict[str, float]] = {}
    eff: dict[str, dict[str, float]] = {}
    for layout, (intra, threads) in layouts.items():
        sess = _session(path, Settings(intra_op_threads=intra, provider=provider), providers)
        for kind in kinds:
            line = f"{kind}_{layout}"
            rate[line], eff[line] = {}, {}
            for b in batches:
                vals = [_measure(work_fn(kind, card, sess.run, b), threads, seconds) for _ in range(repeats)]
                rate[line][str(b)] = statistics.median(v[0] for v in vals)
                eff[line][str(b)] = statistics.median(v[1] for v in vals)
                log(
                    f"  in-process {card['name']:22s} {line:8s} batch {b:3d}: "
                    f"{rate[line][str(b)]:8.0f} images/s, {eff[line][str(b)]:7.0f} per CPU-s"
                )
        del sess
    return {"model": card["name"], "batches": list(batches), "images_per_s": rate, "per_cpu_s": eff}
