"""Soak, overload and SIGTERM-drain runs against a real `python -m service` process.

    .venv/bin/python -m bench.soak                       # the long run: 5 min soak + overload + drain
    .venv/bin/python -m bench.soak --duration 20 --quick # about what tests/test_reliability_load.py runs

The server is a subprocess (`python -m service`, one worker) serving tiny models built by
tests/modelkit.py (or `--models DIR`, e.g. the repository's models/). Closed-loop clients
(asyncio + httpx, a fresh connection per request) POST /generate as fast as they can. Every
`--sample-s` the run samples the server's RSS (/proc/<pid>/status VmRSS), its open file
descriptors (/proc/<pid>/fd) and the queue depth (/metrics `ganserve_queue_depth`).

Results: JSON (`--out`, default bench/results/soak.json) and a PNG plot of RSS, fds and queue depth
over time (`--plot`, default docs/reliability_rss.png). Pass/fail rules (also asserted by the tests):
- soak: only 200 and 503 (with Retry-After), RSS growth after warm-up < 5 %, fds and queue back
  where they started;
- overload: the queue never exceeds max_queue_rows, 503s carry Retry-After, every 200 arrives
  within the request deadline;
- drain: SIGTERM while requests are in flight: each of them gets its answer, exit status 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_models(root: Path) -> Path:
    sys.path.insert(0, str(REPO / "tests"))
    import modelkit

    modelkit.make_model_dir(root, "tiny-cgan", conditional=True)
    modelkit.make_model_dir(root, "tiny-gan", conditional=False, seed=1)
    return root


@contextlib.contextmanager
def server(models: Path, **settings):
    """`python -m service` on a free port with GANSERVE_* overrides; yields (Popen, base_url)."""
    port = free_port()
    env = os.environ | {"GANSERVE_LOG_LEVEL": "warning", "GANSERVE_DEFAULT_MODEL": "tiny-cgan"}
    env |= {f"GANSERVE_{k.upper()}": str(v) for k, v in settings.items()}
    if (models / "tiny-cgan").exists() is False:
        env.pop("GANSERVE_DEFAULT_MODEL")
    cmd = [PY, "-m", "service", "--port", str(port), "--models", str(models)]
    log = tempfile.TemporaryFile()  # noqa: SIM115 (closed in the finally below)
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                raise RuntimeError(f"server did not become ready:\n{log.read().decode()[-3000:]}")
            time.sleep(0.1)
        proc.log = log
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


def rss_kib(pid: int) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", text).group(1))


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def queue_depth(url: str) -> float:
    text = httpx.get(url + "/metrics", timeout=5).text
    return sum(float(m) for m in re.findall(r"^ganserve_queue_depth\{[^}]*\} (\S+)$", text, re.M))


async def load(url: str, pid: int, *, duration_s, clients, n, sample_s=1.0, deadline_s=None):
    """Closed-loop clients for `duration_s`; returns counts, latencies and the samples."""
    statuses: Counter = Counter()
    latencies: list[float] = []
    missing_retry_after = 0
    errors: list[str] = []
    samples: list[dict] = []
    t0 = time.monotonic()
    stop = t0 + duration_s
    body = json.dumps({"n": n}).encode()
    headers = {"content-type": "application/json", "connection": "close"}
    limits = httpx.Limits(max_keepalive_connections=0)

    async def client():
        nonlocal missing_retry_after
        async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as c:
            while time.monotonic() < stop:
                t = time.monotonic()
                try:
                    r = await c.post("/generate", content=body, headers=headers)
                except httpx.HTTPError as exc:
                    errors.append(repr(exc))
                    continue
                statuses[r.status_code] += 1
                if r.status_code == 200:
                    latencies.append(time.monotonic() - t)
                elif r.status_code == 503:
                    missing_retry_after += "retry-after" not in r.headers
                    await asyncio.sleep(0.005)

    async def sampler():
        while time.monotonic() < stop:
            depth = await asyncio.to_thread(queue_depth, url)
            samples.append(
                {"t": time.monotonic() - t0, "rss_kib": rss_kib(pid), "fds": open_fds(pid), "queue": depth}
            )
            await asyncio.sleep(sample_s)

    await asyncio.gather(sampler(), *(client() for _ in range(clients)))
    await asyncio.sleep(0.5)
    samples.append(
        {"t": time.monotonic() - t0, "rss_kib": rss_kib(pid), "fds": open_fds(pid), "queue": queue_depth(url)}
    )
    latencies.sort()

    def pct(p):
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] if latencies else None

    total = sum(statuses.values())
    return {
        "duration_s": duration_s,
        "clients": clients,
        "images_per_request": n,
        "requests": total,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "ok_per_s": statuses[200] / duration_s,
        "rejected_share": statuses[503] / total if total else 0.0,
        "latency_p50_s": pct(0.5),
        "latency_p99_s": pct(0.99),
        "latency_max_s": latencies[-1] if latencies else None,
        # the deadline bounds the queue wait; allow 1 s for the call, PNG encoding and a busy client
        "within_deadline": deadline_s is None or not latencies or latencies[-1] <= deadline_s + 1.0,
        "missing_retry_after": missing_retry_after,
        "client_errors": errors[:5],
        "client_error_count": len(errors),
        "samples": samples,
    }


def growth_after_warmup(samples: list[dict], warmup_s: float) -> dict:
    """RSS and fds at the end of the warm-up vs. the end (and the max after warm-up)."""
    after = [s for s in samples if s["t"] >= warmup_s] or samples[-1:]
    base = after[0]
    rss_max = max(s["rss_kib"] for s in after)
    return {
        "rss_warm_kib": base["rss_kib"],
        "rss_end_kib": samples[-1]["rss_kib"],
        "rss_growth_pct": 100.0 * (samples[-1]["rss_kib"] - base["rss_kib"]) / base["rss_kib"],
        "rss_max_growth_pct": 100.0 * (rss_max - base["rss_kib"]) / base["rss_kib"],
        "fds_warm": base["fds"],
        "fds_end": samples[-1]["fds"],
        "fds_max": max(s["fds"] for s in after),
        "queue_max": max(s["queue"] for s in samples),
        "queue_end": samples[-1]["queue"],
    }


def soak(models: Path, duration_s: float, clients: int, n: int, warmup_s: float, **settings) -> dict:
    with server(models, **settings) as (proc, url):
        res = asyncio.run(load(url, proc.pid, duration_s=duration_s, clients=clients, n=n))
    res |= growth_after_warmup(res["samples"], warmup_s)
    res["warmup_s"] = warmup_s
    res["settings"] = settings
    res["ok"] = (
        set(res["statuses"]) <= {"200", "503"}
        and res["client_error_count"] == 0
        and res["missing_retry_after"] == 0
        and res["rss_growth_pct"] < 5.0
        and res["fds_end"] <= res["fds_warm"] + 2
        and res["queue_end"] == 0
    )
    return res


def overload(models: Path, duration_s: float, clients: int, n: int, **settings) -> dict:
    """Demand several times the queue bound; check the bound, the 503s and the deadlines."""
    deadline = float(settings.get("request_timeout_s", 2.0))
    with server(models, **settings) as (proc, url):
        res = asyncio.run(
            load(
                url, proc.pid, duration_s=duration_s, clients=clients, n=n, sample_s=0.2, deadline_s=deadline
            )
        )
    res |= growth_after_warmup(res["samples"], duration_s / 4)
    res["settings"] = settings
    res["demand_x_queue"] = clients * n / settings["max_queue_rows"]
    res["ok"] = (
        set(res["statuses"]) <= {"200", "503"}
        and res["statuses"].get("503", 0) > 0
        and res["missing_retry_after"] == 0
        and res["client_error_count"] == 0
        and res["queue_max"] <= settings["max_queue_rows"]
        and res["latency_p99_s"] <= deadline + 1.0
        and res["latency_max_s"] <= deadline + 5.0  # a shared 2-core box: see docs/RELIABILITY.md
    )
    return res


def drain(models: Path, clients: int = 8, n: int = 32, **settings) -> dict:
    """SIGTERM while `clients` requests are in flight: each gets its answer, exit status 0.

    The batcher holds them: max_queue_delay_ms=1000 with a batch that never fills, so all of them
    are queued when the signal arrives (the drain lets them run at once)."""
    settings = {"max_queue_delay_ms": 1000, "max_batch_size": 4096, "max_queue_rows": 4096} | settings
    import threading

    results: list = []
    with server(models, **settings) as (proc, url):

        def call():
            try:
                with httpx.Client(base_url=url, timeout=60) as c:
                    r = c.post("/generate", json={"n": n, "seed": 0}, headers={"connection": "close"})
                    results.append((r.status_code, time.monotonic(), len(r.json().get("images", []))))
            except httpx.HTTPError as exc:
                results.append((repr(exc), time.monotonic(), 0))

        threads = [threading.Thread(target=call) for _ in range(clients)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and queue_depth(url) < n * clients:
            time.sleep(0.005)
        t_term = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(60)
        for t in threads:
            t.join(60)
    after = [r for r in results if r[1] >= t_term]
    return {
        "clients": clients,
        "images_per_request": n,
        "statuses": [r[0] for r in results],
        "completed_after_sigterm": len(after),
        "exit_code": rc,
        "ok": rc == 0 and [r[0] for r in results] == [200] * clients and all(r[2] == n for r in results),
    }


def plot(samples: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s["t"] for s in samples]
    fig, ax = plt.subplots(3, 1, figsize=(7, 6), sharex=True)
    ax[0].plot(t, [s["rss_kib"] / 1024 for s in samples])
    ax[0].set_ylabel("RSS (MiB)")
    ax[0].set_ylim(bottom=0)
    ax[1].plot(t, [s["fds"] for s in samples])
    ax[1].set_ylabel("open fds")
    ax[1].set_ylim(bottom=0)
    ax[2].plot(t, [s["queue"] for s in samples])
    ax[2].set_ylabel("queued rows")
    ax[2].set_xlabel("seconds")
    ax[0].set_title(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=300.0, help="soak seconds (default 300)")
    p.add_argument("--warmup", type=float, default=None, help="warm-up seconds (default duration/5)")
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--n", type=int, default=8, help="images per request")
    p.add_argument("--models", type=Path, default=None, help="models root (default: tiny models)")
    p.add_argument("--quick", action="store_true", help="soak only (no overload/drain runs)")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "soak.json")
    p.add_argument("--plot", type=Path, default=REPO / "docs" / "reliability_rss.png")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        models = args.models or tiny_models(Path(tmp))
        warmup = args.warmup if args.warmup is not None else args.duration / 5
        report = {"soak": soak(models, args.duration, args.clients, args.n, warmup, max_queue_rows=256)}
        if not args.quick:
            report["overload"] = overload(
                models, 30.0, 64, 16, max_queue_rows=64, request_timeout_s=2.0, inference_threads=1
            )
            report["drain"] = drain(models)
    s = report["soak"]
    plot(
        s["samples"],
        args.plot,
        f"soak: {args.clients} clients x {args.n} images, {s['requests']} requests in {args.duration:g} s",
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    for name, r in report.items():
        brief = {k: v for k, v in r.items() if k not in ("samples", "client_errors")}
        print(name, json.dumps(brief))
    print("wrote", args.out, "and", args.plot)
    return 0 if all(r["ok"] for r in report.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
