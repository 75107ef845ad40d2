"""A few checks against a real uvicorn on 127.0.0.1: HTTP end to end, graceful shutdown, the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
from conftest import free_port, run_uvicorn

from service.app import create_app

REPO = Path(__file__).resolve().parents[1]


def test_real_http_round_trip(live_server):
    with httpx.Client(base_url=live_server) as c:
        assert c.get("/readyz").status_code == 200
        r = c.post("/generate", json={"n": 2, "seed": 1})
        assert r.status_code == 200 and len(r.json()["images"]) == 2
        assert c.post("/generate", json={"n": 100000}).status_code == 422
        assert "ganserve_requests_total" in c.get("/metrics").text


def test_graceful_shutdown_finishes_requests_in_flight(make_settings):
    app = create_app(make_settings(inference_threads=1))
    results = []
    with run_uvicorn(app) as (server, url):
        gen = app.state.registry.models["tiny-cgan"].generator
        original = gen.run_fn
        release = threading.Event()

        def slow(inputs):
            release.wait(10)
            return original(inputs)

        gen.run_fn = slow

        def call():
            with httpx.Client(base_url=url, timeout=30) as c:
                results.append(c.post("/generate", json={"n": 3}).status_code)

        threads = [threading.Thread(target=call) for _ in range(4)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while gen.queued_rows + 3 * gen.running < 12 and time.monotonic() < deadline:
            time.sleep(0.01)
        server.should_exit = True  # what SIGTERM does
        time.sleep(0.2)
        release.set()
        for t in threads:
            t.join(20)
    assert results == [200] * 4


def test_python_m_service_starts_with_no_models(tmp_path):
    port = free_port()
    env = os.environ | {"GANSERVE_LOG_LEVEL": "warning"}
    cmd = [sys.executable, "-m", "service", "--port", str(port), "--models", str(tmp_path / "none")]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read().decode()
                time.sleep(0.1)
        assert r.status_code == 200
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz")
        assert ready.status_code == 503 and ready.json() == {"ready": False, "models": {}}
    finally:
        proc.terminate()
        assert proc.wait(20) == 0
