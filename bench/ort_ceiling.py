"""The ceiling: in-process ONNX Runtime images/s of each shipped generator, batch 1..256 (or 1024).

Sessions are built exactly as the service builds them (`service.registry._session`: provider list,
intra-op threads, sequential execution, all graph optimisations). Three lines per model:
- `ort_1x<k>`: one caller, intra_op = number of cores (the naive "one big call" setting);
- `ort_<t>x1`: `t` caller threads sharing one session at intra_op 1 (what the service does with
  `inference_threads=t`, `intra_op_threads=1`);
- `full_<t>x1`: the same plus the per-image work the service adds around the call: z sampling
  from one seed per image (`service.latent`) and PNG + base64 encoding (`service.imaging`).
Each point: a warm-up call, then calls for `seconds`, `repeats` times; the median is reported.
"""

from __future__ import annotations

import json
import os
import statistics
import threading
import time
from pathlib import Path

import numpy as np

from service import imaging, latent
from service.registry import _session, choose_providers
from service.settings import Settings

CPU_BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
GPU_BATCHES = (*CPU_BATCHES, 512, 1024)


def _feeds(card: dict, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    feeds = {"z": rng.standard_normal((n, card["latent_dim"])).astype(np.float32)}
    if card.get("num_classes"):
        feeds["y"] = latent.one_hot(rng.integers(card["num_classes"], size=n), card["num_classes"])
    return feeds


def _measure(work, threads: int, seconds: float) -> tuple[float, float]:
    """Run `work()` (returns images done) in `threads` threads for `seconds`:
    (images/s, images per CPU-second of this process: robust to other users' load)."""
    work()  # warm-up (also outside the timed window for every thread)
    stop = time.perf_counter() + seconds
    done = [0] * threads

    def loop(i: int) -> None:
        while time.perf_counter() < stop:
            done[i] += work()

    t0, c0 = time.perf_counter(), time.process_time()
    ts = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    cpu = time.process_time() - c0
    return sum(done) / (time.perf_counter() - t0), sum(done) / cpu if cpu > 0 else float("nan")


def run(
    models_dir: Path,
    provider: str = "cpu",
    batches=CPU_BATCHES,
    seconds: float = 0.6,
    repeats: int = 3,
    callers: int = 2,
    log=print,
) -> dict:
    cores = os.cpu_count() or 1
    providers = choose_providers(provider)
    out = {"provider": provider, "cores": cores, "batches": list(batches), "models": {}, "per_cpu_s": {}}
    for mdir in sorted(p.parent for p in models_dir.glob("*/model.json")):
        card = json.loads((mdir / "model.json").read_text())  # the fields the bench needs
        path = mdir / card["files"]["generator"]
        variants = {
            f"ort_1x{cores}": (Settings(intra_op_threads=cores, provider=provider), 1, False),
            f"ort_{callers}x1": (Settings(intra_op_threads=1, provider=provider), callers, False),
            f"full_{callers}x1": (Settings(intra_op_threads=1, provider=provider), callers, True),
        }
        res: dict[str, dict[str, float]] = {}
        eff: dict[str, dict[str, float]] = {}
        for vname, (settings, threads, full) in variants.items():
            sess = _session(path, settings, providers)
            run_ = sess.run
            res[vname], eff[vname] = {}, {}
            for b in batches:
                rng = np.random.default_rng(0)
                feeds = _feeds(card, b, rng)
                seeds = list(range(b))

                if full:

                    def work(b=b, seeds=seeds, card=card, run_=run_):
                        z, drawn = latent.latents_for_seeds(
                            seeds, card["latent_dim"], card.get("num_classes") or 0
                        )
                        f = {"z": z}
                        if card.get("num_classes"):
                            f["y"] = latent.one_hot(drawn, card["num_classes"])
                        imaging.png_b64_rows(run_(None, f)[0])
                        return b
                else:

                    def work(b=b, feeds=feeds, run_=run_):
                        run_(None, feeds)
                        return b

                vals = [_measure(work, threads, seconds) for _ in range(repeats)]
                res[vname][str(b)] = statistics.median(v[0] for v in vals)
                eff[vname][str(b)] = statistics.median(v[1] for v in vals)
                log(
                    f"  ort {card['name']:14s} {vname:9s} batch {b:5d}: {res[vname][str(b)]:8.0f} images/s, "
                    f"{eff[vname][str(b)]:6.0f} per CPU-s"
                )
            del sess
        out["models"][card["name"]] = res
        out["per_cpu_s"][card["name"]] = eff
    return out
