"""Fault injection beyond tests/test_service_api.py: a failing session among concurrent batches,
a client gone mid-request on a real socket, and broken model directories named by /readyz."""

from __future__ import annotations

import asyncio
import shutil
import socket
import threading
import time

import httpx
import pytest
from conftest import run_uvicorn, started
from modelkit import make_model_dir, refresh_checksums
from starlette.testclient import TestClient

from service.app import create_app


@pytest.mark.anyio
async def test_a_failing_call_fails_only_its_own_batch_among_concurrent_ones(make_settings):
    app = create_app(make_settings(max_batch_size=4, inference_threads=1))
    async with started(app):
        gen = app.state.registry.models["tiny-cgan"].generator
        original, calls = gen.run_fn, []

        def flaky(inputs):
            calls.append(len(inputs["z"]))
            if len(calls) == 2:  # the second call raises
                raise RuntimeError("injected: device lost")
            time.sleep(0.01)
            return original(inputs)

        gen.run_fn = flaky
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            rs = await asyncio.gather(*(c.post("/generate", json={"n": 4}) for _ in range(6)))
            codes = sorted(r.status_code for r in rs)
            assert codes == [200] * 5 + [500], codes
            bad = next(r for r in rs if r.status_code == 500)
            assert bad.json()["error"] == "inference_failed" and bad.json()["request_id"]
            assert (await c.post("/generate", json={"n": 4})).status_code == 200
        assert gen.queued_rows == 0 and gen.running == 0


def test_a_socket_closed_mid_request_leaves_no_work_behind(make_settings):
    app = create_app(make_settings(inference_threads=1, max_queue_delay_ms=300, max_batch_size=4096))
    with run_uvicorn(app) as (_, url):
        gen = app.state.registry.models["tiny-cgan"].generator
        original, rows = gen.run_fn, []

        def counting(inputs):
            rows.append(len(inputs["z"]))
            return original(inputs)

        gen.run_fn = counting
        port = int(url.rsplit(":", 1)[1])
        body = b'{"n": 7}'
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(
            b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        deadline = time.monotonic() + 5
        while gen.queued_rows != 7 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert gen.queued_rows == 7
        s.close()  # gone before the batcher's 300 ms wait is over
        time.sleep(0.6)
        assert 7 not in rows and gen.queued_rows == 0
        assert httpx.post(url + "/generate", json={"n": 2}).status_code == 200


def test_missing_truncated_and_wrong_signature_models_fail_at_startup_and_readyz_names_each(
    tmp_path, make_settings
):
    make_model_dir(tmp_path, "good")
    missing = make_model_dir(tmp_path, "missing")
    (missing / "generator.onnx").unlink()
    trunc = make_model_dir(tmp_path, "truncated")
    data = (trunc / "generator.onnx").read_bytes()
    (trunc / "generator.onnx").write_bytes(data[: len(data) // 3])
    refresh_checksums(trunc)
    wrong = make_model_dir(tmp_path, "wrongsig")
    shutil.copy(make_model_dir(tmp_path / "x", "u", conditional=False) / "generator.onnx", wrong)
    refresh_checksums(wrong)
    with TestClient(create_app(make_settings(models_dir=tmp_path, default_model="good"))) as c:
        r = c.get("/readyz")
        assert r.status_code == 503
        models = r.json()["models"]
        assert models["good"] == "ready"
        assert (
            "missing/generator.onnx" in models["missing"] and "missing" in models["missing"].split(":", 1)[1]
        )
        assert "truncated/generator.onnx" in models["truncated"]
        assert "wrongsig/generator.onnx: inputs" in models["wrongsig"]
        assert c.post("/generate", json={"n": 1}).status_code == 200  # the good one serves
        r = c.post("/generate", json={"model": "wrongsig"})
        assert r.status_code == 503 and "retry-after" in r.headers and "inputs" in r.json()["detail"]


def test_the_hot_paths_survive_a_thread_storm(client):
    """Concurrent sync clients (threads) on every endpoint: no 5xx, no deadlock."""
    errors = []

    def hammer():
        for _ in range(5):
            for method, path, body in (
                ("POST", "/generate", {"n": 3}),
                ("POST", "/interpolate", {"keyframes": [{"seed": 1}, {"seed": 2}], "steps": 4}),
                ("POST", "/arithmetic", {"terms": [{"seeds": [1, 2]}], "neighbors": 2}),
                ("GET", "/models", None),
            ):
                r = client.request(method, path, json=body)
                if r.status_code >= 500:
                    errors.append((path, r.status_code, r.text))

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]
