"""The benchmark driver: real uvicorn servers on 127.0.0.1, the load generator, the ceiling.

Each configuration is a fresh `python -m service` process (GANSERVE_* settings in its
environment); the naive baselines are `uvicorn bench.naive:app` (1 ORT thread, and ORT's
defaults). Every point is `repeats` runs of `duration` s (after a short warm-up) on the same
server; the medians are reported. The host-ceiling part serves a near-free generator
(bench/nearfree.py) from a temporary model directory; raw (`.npy`) rows are probed first and
skipped, with the reason, when the server does not produce that format.
"""

from __future__ import annotations

import io
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import httpx
import numpy as np

from . import inproc, loadgen, nearfree, ort_ceiling

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable

NPY = "application/x-npy"


class Case(NamedTuple):
    path: str
    body: bytes
    images: int
    headers: dict | None = None  # e.g. Accept for raw replies

    @property
    def raw(self) -> bool:
        return bool(self.headers) and self.headers.get("accept") == NPY


def _gen(n: int, raw: bool = False) -> Case:
    return Case("/generate", json.dumps({"n": n}).encode(), n, {"accept": NPY} if raw else None)


INTERP16 = Case(
    "/interpolate", json.dumps({"keyframes": [{"seed": 1}, {"seed": 2}], "steps": 16}).encode(), 17
)
CASES = {
    "n1": _gen(1),
    "n16": _gen(16),
    "n64": _gen(64),
    "interp16": INTERP16,
    "n1raw": _gen(1, raw=True),
    "n16raw": _gen(16, raw=True),
    "n64raw": _gen(64, raw=True),
}


@dataclass
class Plan:
    duration: float = 4.0
    warmup: float = 0.7
    repeats: int = 3
    ort_seconds: float = 0.5
    ort_repeats: int = 3
    closed_n1: tuple = (1, 8, 32, 64, 128)
    closed_n16: tuple = (1, 16, 64)
    closed_interp: tuple = (1, 16)
    overload_s: float = 30.0
    open_fractions: tuple = (0.25, 0.5, 0.75, 0.9, 1.0, 1.1, 1.25)
    open_duration: float = 4.0
    # the service's raw-reply rows (skipped until the server produces application/x-npy)
    closed_raw: tuple = (("n16raw", 16),)
    # issue 6's naive baseline (ORT's default threads), kept as a second row at fewer points
    naive_default_points: tuple = (("n1", 64), ("n16", 16))
    # in-process references (bench/inproc.py): seconds per measurement, repeats
    ref_seconds: float = 1.0
    ref_repeats: int = 3
    # the host ceiling (near-free model): n=1 for the per-request cost, n=64 for the per-image cost
    host_points: tuple = (("n1", 64), ("n1raw", 64), ("n64", 16), ("n64raw", 16))
    # load-generator processes; 0 = auto (one per 4 cores, at most 4: 1 on 2 cores)
    procs: int = 0

    @property
    def loadgen_procs(self) -> int:
        return self.procs or max(1, min(4, (os.cpu_count() or 1) // 4))


QUICK = Plan(
    duration=1.5,
    warmup=0.4,
    repeats=1,
    ort_seconds=0.25,
    ort_repeats=1,
    closed_n1=(1, 64),
    closed_n16=(16,),
    closed_interp=(16,),
    overload_s=8.0,
    open_fractions=(0.5, 0.9, 1.1),
    open_duration=2.0,
    ref_seconds=0.3,
    ref_repeats=1,
)

# name -> GANSERVE_* overrides (on top of service/settings.py's defaults)
CONFIGS: dict[str, dict[str, str]] = {
    "no batching (max_batch_size=1)": {"MAX_BATCH_SIZE": "1"},
    "no solo session (solo_intra_op_threads=1)": {"SOLO_INTRA_OP_THREADS": "1"},
    "max_queue_delay_ms=1": {"MAX_QUEUE_DELAY_MS": "1"},
    "max_queue_delay_ms=2": {"MAX_QUEUE_DELAY_MS": "2"},
    "max_queue_delay_ms=5": {"MAX_QUEUE_DELAY_MS": "5"},
    "intra_op=2, inference_threads=1": {"INTRA_OP_THREADS": "2", "INFERENCE_THREADS": "1"},
    "intra_op=1, inference_threads=1": {"INTRA_OP_THREADS": "1", "INFERENCE_THREADS": "1"},
    "intra_op=1, inference_threads=4": {"INTRA_OP_THREADS": "1", "INFERENCE_THREADS": "4"},
    "workers=2 (inference_threads=1 each)": {"WORKERS": "2", "INFERENCE_THREADS": "1"},
}
# on CUDA the questions differ: how large a batch pays, and whether more calls in flight help
GPU_CONFIGS: dict[str, dict[str, str]] = {
    "no batching (max_batch_size=1)": {"MAX_BATCH_SIZE": "1"},
    "max_batch_size=256": {"MAX_BATCH_SIZE": "256"},
    "max_batch_size=1024": {"MAX_BATCH_SIZE": "1024"},
    "max_queue_delay_ms=1": {"MAX_QUEUE_DELAY_MS": "1"},
    "inference_threads=1": {"INFERENCE_THREADS": "1"},
    "inference_threads=4": {"INFERENCE_THREADS": "4"},
    "workers=2": {"WORKERS": "2"},
}
CONFIG_POINTS = (("n1", 1), ("n1", 64), ("n16", 16))


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def machine_state() -> dict:
    top = subprocess.run(["top", "-bn1", "-w", "160"], capture_output=True, text=True).stdout.splitlines()
    procs = [ln for ln in top[7:12] if ln.strip()]
    return {"loadavg": os.getloadavg(), "top": procs, "time": time.strftime("%Y-%m-%d %H:%M:%S")}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def server(kind: str, env: dict[str, str] | None = None, models: Path | None = None):
    """Start the service (kind 'service') or the naive baseline ('naive'); yield (url, pid).

    Service: `env` holds GANSERVE_* overrides without the prefix. Naive: `env` may hold PROVIDER,
    NAIVE_THREADS (1: the strong baseline, 0: ORT's defaults) and MODEL (default mnist-cdcgan)."""
    port = _free_port()
    e = dict(os.environ)
    env = env or {}
    if kind == "service":
        e.update({f"GANSERVE_{k}": v for k, v in env.items()})
        cmd = [PY, "-m", "service", "--port", str(port), "--log-level", "warning"]
        if models:
            cmd += ["--models", str(models)]
    else:
        e["GANSERVE_BENCH_MODEL"] = str((models or ROOT / "models") / env.get("MODEL", "mnist-cdcgan"))
        e["GANSERVE_BENCH_PROVIDER"] = env.get("PROVIDER", "cpu")
        e["GANSERVE_BENCH_NAIVE_THREADS"] = env.get("NAIVE_THREADS", "1")
        cmd = [PY, "-m", "uvicorn", "bench.naive:app", "--port", str(port)]
        cmd += ["--log-level", "warning", "--no-access-log"]
    # its own session, as a deployed server would be: with sched_autogroup the kernel shares the
    # CPU between sessions, and the server must not share one slot with the load generator
    # stderr to a file, never a pipe nobody reads: a full pipe (64 KiB of 503 warnings under
    # overload) blocks the server's event loop in its logging call
    errlog = tempfile.TemporaryFile()  # noqa: SIM115 (closed in the finally below)
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=e, stdout=subprocess.DEVNULL, stderr=errlog, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        ready = "/readyz" if kind == "service" else "/docs"
        t_end = time.time() + 90
        while True:
            if proc.poll() is not None:
                errlog.seek(0)
                raise RuntimeError(f"{kind} server exited: {errlog.read().decode()[-2000:]}")
            try:
                if httpx.get(url + ready, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > t_end:
                raise RuntimeError(f"{kind} server not ready after 90 s")
            time.sleep(0.2)
        yield url, proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        errlog.close()


def _median_result(runs: list[loadgen.RunResult]) -> dict:
    """Per-metric medians over repeated runs (statuses summed), with the runs kept."""
    out = asdict(runs[0])
    for key in (
        "requests_per_s",
        "images_per_s",
        "p50_ms",
        "p95_ms",
        "p99_ms",
        "max_ms",
        "mean_batch_size",
        "server_cpu_cores",
        "loadgen_cpu_cores",
        "other_cpu_cores",
    ):
        vals = [getattr(r, key) for r in runs if getattr(r, key) is not None]
        out[key] = statistics.median(vals) if vals else None
    statuses: dict[str, int] = {}
    for r in runs:
        for k, v in r.statuses.items():
            statuses[k] = statuses.get(k, 0) + v
    out["statuses"] = statuses
    out["repeats"] = len(runs)
    out["runs"] = [
        {k: v for k, v in asdict(r).items() if k in ("requests_per_s", "images_per_s", "p50_ms", "p99_ms")}
        for r in runs
    ]
    return out


def closed(url: str, pid: int, case: str, c: int, plan: Plan) -> dict:
    path, body, images, headers = CASES[case]
    runs = [
        loadgen.run(
            loadgen.closed_loop(
                url,
                path,
                body,
                images,
                c,
                plan.duration,
                plan.warmup,
                server_pid=pid,
                headers=headers,
                procs=plan.loadgen_procs,
            )
        )
        for _ in range(plan.repeats)
    ]
    res = _median_result(runs) | {"case": case}
    log(
        f"    {case:8s} c={c:3d}: {res['requests_per_s']:7.0f} req/s {res['images_per_s']:6.0f} img/s "
        f"p50 {res['p50_ms'] or 0:6.1f} p99 {res['p99_ms'] or 0:7.1f} ms "
        f"batch {res['mean_batch_size'] or 0:5.1f} "
        f"cpu srv {res['server_cpu_cores'] or 0:.2f} gen {res['loadgen_cpu_cores']:.2f} "
        f"other {res['other_cpu_cores'] or 0:.2f} {res['statuses']}"
    )
    return res


def open_run(
    url: str, pid: int, case: str, rate: float, duration: float, warmup: float, procs: int = 1
) -> dict:
    path, body, images, headers = CASES[case]
    r = loadgen.run(
        loadgen.open_loop(
            url, path, body, images, rate, duration, warmup, server_pid=pid, headers=headers, procs=procs
        )
    )
    res = asdict(r) | {"case": case, "offered_per_s": rate}
    log(
        f"    open {case:5s} {rate:7.0f}/s: {r.requests_per_s:7.0f} ok/s p50 {r.p50_ms or 0:7.1f} "
        f"p99 {r.p99_ms or 0:7.1f} ms batch {r.mean_batch_size or 0:5.1f} conns {r.max_connections} "
        f"cpu srv {r.server_cpu_cores or 0:.2f} gen {r.loadgen_cpu_cores:.2f} {r.statuses}"
    )
    return res


def raw_unavailable(url: str, case: str) -> str | None:
    """None when the server answers `case` with a `.npy` array of the right count and dtype;
    otherwise why not (406, or the Accept header ignored), for the skip note."""
    path, body, images, headers = CASES[case]
    try:
        r = httpx.post(
            url + path, content=body, headers={"content-type": "application/json", **headers}, timeout=30
        )
    except httpx.HTTPError as exc:
        return f"probe failed ({type(exc).__name__})"
    ctype = r.headers.get("content-type", "")
    if r.status_code != 200:
        return f"the server answers {r.status_code} to Accept: {NPY}"
    if not ctype.startswith(NPY):
        return f"the server ignores Accept: {NPY} (it replies {ctype or 'without a content-type'})"
    try:
        arr = np.load(io.BytesIO(r.content), allow_pickle=False)
    except ValueError as exc:
        return f"the {NPY} reply is not a readable .npy ({exc})"
    if arr.dtype != np.uint8 or arr.ndim not in (3, 4) or arr.shape[0] != images:
        got = f"dtype {arr.dtype} and shape {arr.shape}"
        return f"the {NPY} reply has {got}, expected uint8 ({images}, h, w[, c])"
    return None


def closed_points(url: str, pid: int, points, plan: Plan) -> list[dict]:
    """Closed-loop (case, concurrency) points; raw cases are probed once and skipped with a note."""
    rows, probed = [], {}
    for case, c in points:
        if CASES[case].raw:
            if case not in probed:
                probed[case] = raw_unavailable(url, case)
            if probed[case]:
                log(f"    {case:8s} c={c:3d}: skipped: {probed[case]}")
                rows.append({"case": case, "concurrency": c, "skipped": probed[case]})
                continue
        rows.append(closed(url, pid, case, c, plan))
    return rows


def find_knee(url: str, pid: int, case: str, capacity: float, plan: Plan) -> tuple[list[dict], float]:
    """Offered rates as fractions of the closed-loop capacity; the knee is the highest rate that
    is still served in full (>= 97% of offered, no errors) with p99 under 1 s (a tenth of the
    deadline: past it, the queue grows without bound)."""
    rows, knee = [], 0.0
    for f in plan.open_fractions:
        rate = max(1.0, capacity * f)
        res = open_run(url, pid, case, rate, plan.open_duration, plan.warmup, plan.loadgen_procs)
        res["fraction_of_capacity"] = f
        rows.append(res)
        served = res["requests_per_s"] >= 0.97 * rate and not (set(res["statuses"]) - {"200"})
        if served and (res["p99_ms"] or 1e9) < 1000:
            knee = rate
    return rows, knee


REF_BATCH = 64  # the goals' in-process batch (the service's max_batch_size)
PARTS = ("ort", "inproc", "service", "open", "naive", "host", "configs")


def reference_model(models: Path) -> Path:
    """The model the goals are read on: mnist-cdcgan when present, else the first model."""
    preferred = models / "mnist-cdcgan"
    if (preferred / "model.json").is_file():
        return preferred
    return sorted(p.parent for p in models.glob("*/model.json"))[0]


def host_ceiling(plan: Plan, provider: str, models: Path, log=log) -> dict:
    """The service's own host cost: a near-free generator shaped like the reference model, served
    with default settings (PNG and raw replies, n=1 and n=64), and the same host work in process."""
    like = reference_model(models)
    with tempfile.TemporaryDirectory(prefix="ganserve-nearfree-") as tmp:
        mdir = nearfree.make_model_dir(Path(tmp), like)
        log(f"host ceiling: near-free {mdir.name} (ONNX Runtime ~free), in process")
        ref = inproc.measure(
            mdir,
            kinds=("png", "raw"),
            batches=(1, REF_BATCH),
            provider=provider,
            seconds=plan.ref_seconds,
            repeats=plan.ref_repeats,
            log=log,
        )
        log("host ceiling: the service on the near-free model")
        with server("service", {"PROVIDER": provider}, Path(tmp)) as (url, pid):
            rows = closed_points(url, pid, plan.host_points, plan)
    return {"model": mdir.name, "like": like.name, "inproc": ref, "service": rows}


def run_all(
    plan: Plan, out_dir: Path, provider: str = "cpu", models: Path | None = None, only: set | None = None
) -> dict:
    models = models or ROOT / "models"
    only = only or set(PARTS)
    results: dict = {
        "plan": asdict(plan),
        "machine": {
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "before": machine_state(),
        },
        "provider": provider,
        "loadgen_procs": plan.loadgen_procs,
    }
    try:
        import onnxruntime

        results["machine"]["onnxruntime"] = onnxruntime.__version__
    except ImportError:  # pragma: no cover
        pass
    t_start = time.time()
    out_dir.mkdir(parents=True, exist_ok=True)

    def checkpoint() -> None:  # a crash late in the run must not lose the parts already measured
        (out_dir / "results.partial.json").write_text(json.dumps(results, indent=1, default=str))

    if "ort" in only:
        log("ONNX Runtime ceiling (in process)")
        batches = ort_ceiling.GPU_BATCHES if provider == "cuda" else ort_ceiling.CPU_BATCHES
        results["ort"] = ort_ceiling.run(
            models,
            provider,
            batches,
            plan.ort_seconds,
            plan.ort_repeats,
            log=lambda m: log(m),
        )
        checkpoint()
    if "inproc" in only:
        log(f"in-process references ({reference_model(models).name}, batch {REF_BATCH})")
        results["inproc"] = inproc.measure(
            reference_model(models),
            kinds=("ort", "png"),
            batches=(REF_BATCH,),
            provider=provider,
            seconds=plan.ref_seconds,
            repeats=plan.ref_repeats,
            log=log,
        )
        checkpoint()
    if "service" in only or "open" in only:
        log("service, default settings")
        env = {"PROVIDER": provider}
        with server("service", env, models) as (url, pid):
            if "service" in only:
                res = []
                for c in plan.closed_n1:
                    res.append(closed(url, pid, "n1", c, plan))
                for c in plan.closed_n16:
                    res.append(closed(url, pid, "n16", c, plan))
                for c in plan.closed_interp:
                    res.append(closed(url, pid, "interp16", c, plan))
                res += closed_points(url, pid, plan.closed_raw, plan)
                results["service"] = res
                checkpoint()
            if "open" in only:
                results["open"] = {}
                for case, c in (("n16", 16), ("n1", 64)):
                    cap = closed(url, pid, case, c, plan)["requests_per_s"]
                    rows, knee = find_knee(url, pid, case, cap, plan)
                    results["open"][case] = {"capacity_per_s": cap, "rates": rows, "knee_per_s": knee}
                    log(f"  knee {case}: {knee:.0f} req/s (closed-loop capacity {cap:.0f})")
                for case in ("n16", "n1"):
                    knee = results["open"][case]["knee_per_s"] or results["open"][case]["capacity_per_s"]
                    log(f"  overload {case}: 2 x knee = {2 * knee:.0f} req/s for {plan.overload_s:g} s")
                    res = open_run(url, pid, case, 2 * knee, plan.overload_s, plan.warmup, plan.loadgen_procs)
                    results["open"][case]["overload"] = res
                    checkpoint()
    if "naive" in only:
        model = {"MODEL": reference_model(models).name, "PROVIDER": provider}
        log("naive baseline, sync handler, 1 ORT thread (the goals' baseline)")
        with server("naive", model | {"NAIVE_THREADS": "1"}, models) as (url, pid):
            points = [("n1", c) for c in plan.closed_n1] + [("n16", c) for c in plan.closed_n16]
            results["naive_strong"] = closed_points(url, pid, points, plan)
            checkpoint()
        log("naive baseline, ONNX Runtime's default threads (issue 6's)")
        with server("naive", model | {"NAIVE_THREADS": "0"}, models) as (url, pid):
            results["naive"] = closed_points(url, pid, plan.naive_default_points, plan)
            checkpoint()
    if "host" in only:
        results["host"] = host_ceiling(plan, provider, models, log)
        checkpoint()
    if "configs" in only:
        results["configs"] = {}
        for name, env in (GPU_CONFIGS if provider == "cuda" else CONFIGS).items():
            log(f"config: {name}")
            with server("service", {"PROVIDER": provider, **env}, models) as (url, pid):
                results["configs"][name] = {
                    "env": env,
                    "points": [closed(url, pid, case, c, plan) for case, c in CONFIG_POINTS],
                }
                checkpoint()
    results["machine"]["after"] = machine_state()
    results["elapsed_s"] = time.time() - t_start
    return results
