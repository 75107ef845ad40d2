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


def _model_roots(tmp_path: Path) -> dict[str, Path]:
    """Three roots with nothing to serve: missing, empty, and one broken model directory."""
    (tmp_path / "empty").mkdir()
    broken = tmp_path / "broken" / "half-copied"
    broken.mkdir(parents=True)
    (broken / "model.json").write_text("{}")
    return {"missing": tmp_path / "none", "empty": tmp_path / "empty", "broken": tmp_path / "broken"}


def test_python_m_service_refuses_to_start_with_no_model(tmp_path):
    for case, root in _model_roots(tmp_path).items():
        env = {k: v for k, v in os.environ.items() if k != "GANSERVE_ALLOW_EMPTY"}
        cmd = [sys.executable, "-m", "service", "--port", str(free_port()), "--models", str(root)]
        out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 1, (case, out.stdout, out.stderr)
        message = out.stderr
        assert message.startswith("error: no model to serve: ") and str(root) in message, message
        assert "--models DIR" in message and "--allow-empty" in message, message
        assert "Uvicorn running" not in message, "it stops before binding a port"
        if case == "broken":
            assert "half-copied: half-copied/model.json" in message, "names the model and the problem"


def test_python_m_service_starts_empty_when_allowed(tmp_path):
    """--allow-empty or GANSERVE_ALLOW_EMPTY=1: up and alive, not ready, no models."""
    roots = _model_roots(tmp_path)
    for root, allow in ((roots["missing"], ["--allow-empty"]), (roots["broken"], [])):
        port = free_port()
        env = (
            os.environ | {"GANSERVE_LOG_LEVEL": "warning"} | ({} if allow else {"GANSERVE_ALLOW_EMPTY": "1"})
        )
        cmd = [sys.executable, "-m", "service", "--port", str(port), "--models", str(root), *allow]
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
            assert ready.status_code == 503 and ready.json()["ready"] is False
            models = ready.json()["models"]
            if allow:  # the missing root
                assert models == {}
            else:  # the broken model is listed with its problem
                assert list(models) == ["half-copied"] and models["half-copied"].startswith("failed: ")
        finally:
            proc.terminate()
            assert proc.wait(20) == 0


def test_server_and_cli_print_the_package_version():
    import service

    for argv in (["-m", "service", "--version"], ["-m", "service.cli", "--version"]):
        out = subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert out.stdout.split()[-1] == service.__version__ != "0+unknown", out.stdout
