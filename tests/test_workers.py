"""`python -m service --workers 2` on 127.0.0.1: /metrics is the sum over both workers (prometheus
multiprocess mode), nothing lost or doubled; the metrics directory goes with the server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
from conftest import free_port
from prometheus_client.parser import text_string_to_metric_families


def samples(text: str) -> dict[tuple, float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_two_workers_share_one_metrics_view(model_root, tmp_path):
    port = free_port()
    env = dict(os.environ, TMPDIR=str(tmp_path), GANSERVE_DEFAULT_MODEL="tiny-cgan", GANSERVE_PROVIDER="cpu")
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    cmd = [
        sys.executable,
        "-m",
        "service",
        "--port",
        str(port),
        "--models",
        str(model_root),
        "--workers",
        "2",
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "not ready"
            time.sleep(0.1)
        (shared,) = tmp_path.glob("ganserve-metrics-*")

        def one(i: int) -> int:  # a new connection each: the kernel spreads them over the workers
            r = httpx.post(url + "/generate", json={"n": 3, "seed": i}, timeout=30)
            return r.status_code

        with ThreadPoolExecutor(16) as pool:
            statuses = list(pool.map(one, range(240)))
        assert statuses == [200] * 240
        workers = {f.stem.split("_")[-1] for f in shared.glob("counter_*.db")}
        assert len(workers) == 2, workers  # both workers served and wrote their counters

        got = samples(httpx.get(url + "/metrics", timeout=10).text)
        cgan = (("model", "tiny-cgan"), ("version", "1"))
        assert got[("ganserve_images_generated_total", cgan)] == 720
        ok = (("endpoint", "/generate"), ("method", "POST"), ("status", "200"))
        assert got[("ganserve_requests_total", ok)] == 240
        assert got[("ganserve_request_seconds_count", (("endpoint", "/generate"),))] == 240
        assert got[("ganserve_batch_size_sum", cgan)] == 720
        assert got[("ganserve_queue_depth", cgan)] == 0
        info = [v for (name, _), v in got.items() if name == "ganserve_model_info"]
        assert info and set(info) == {1.0}  # the max over workers: 1, not 2
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    assert proc.returncode == 0
    assert not list(tmp_path.glob("ganserve-metrics-*"))  # removed with the server
