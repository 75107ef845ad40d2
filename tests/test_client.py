"""The SDK against the real app: in-process (ASGI transports) and over a real uvicorn on 127.0.0.1."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest
from PIL import Image as PILImage

from service.client import (
    APIError,
    AsyncGanClient,
    BadRequest,
    DeadlineExceeded,
    GanClient,
    GanServeError,
    ModelUnavailable,
    NotFound,
    Overloaded,
    ServerError,
    TransportError,
    Unauthorized,
)


@pytest.fixture
def gan(client):
    """GanClient over the started app's in-process transport (real ASGI, real ONNX Runtime)."""
    with GanClient("http://testserver", transport=client._transport, retries=0) as g:
        yield g


def test_importing_the_sdk_needs_neither_fastapi_nor_onnxruntime():
    """As if they were not installed: any import of them fails; the SDK and the CLI still load."""
    code = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"fastapi", "starlette", "onnxruntime", "uvicorn", "scipy"}:
            raise ImportError(f"{name} is not installed")
sys.meta_path.insert(0, Block())
import service.client, service.cli
service.cli.build_parser()
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_generate_gives_images_as_pil_and_numpy_with_seeds_labels_latents(gan, tmp_path):
    result = gan.generate(n=4, seed=10, labels=2, return_latents=True)
    assert len(result) == 4 and result.seed == 10 and result.model == "tiny-cgan"
    assert [img.seed for img in result] == [10, 11, 12, 13]
    assert all(img.label == 2 for img in result)
    first = result[0]
    assert first.pil.size == (8, 8) and first.array.dtype == np.uint8 and first.array.shape == (8, 8)
    assert first.latent.shape == (8,)
    np.testing.assert_allclose(first.latent, np.random.default_rng(10).standard_normal(8), rtol=1e-6)
    assert result.arrays.shape == (4, 8, 8)
    again = gan.generate(seeds=[12], labels=2)
    assert np.array_equal(again[0].array, result[2].array)  # same seed, label, model: same pixels
    grid = result.save_grid(tmp_path / "grid.png", nrow=2, scale=1)
    assert PILImage.open(grid).size == (2 + 2 * 10, 2 + 2 * 10)
    assert len(result.save_all(tmp_path / "each")) == 4


def test_interpolate_strip_and_gif(gan, tmp_path):
    walk = gan.interpolate(
        keyframes=[{"seed": 1, "label": 0}, {"seed": 2, "label": 2}], steps=5, method="lerp"
    )
    assert len(walk) == 6
    assert walk[0].t == 0.0 and walk[-1].t == 1.0
    assert walk[0].label == [1.0, 0.0, 0.0] and walk[-1].label == [0.0, 0.0, 1.0]
    gif = PILImage.open(walk.save_gif(tmp_path / "walk.gif"))
    assert gif.n_frames == 6
    assert PILImage.open(walk.save_strip(tmp_path / "strip.png", scale=1)).width == 2 + 6 * 10


def test_arithmetic_and_neighbours(gan):
    out = gan.arithmetic(
        terms=[{"seeds": [1, 2]}, {"weight": -1, "seeds": [3]}, {"seeds": [4]}], label=1, neighbors=3, seed=5
    )
    expected = np.mean([np.random.default_rng(s).standard_normal(8) for s in (1, 2)], axis=0)
    expected += -np.random.default_rng(3).standard_normal(8) + np.random.default_rng(4).standard_normal(8)
    np.testing.assert_allclose(out.result.latent, expected, rtol=1e-5, atol=1e-5)
    assert len(out.neighbors) == 3 and out.label == 1
    assert all(np.abs(n.latent - out.result.latent).max() <= 0.25 + 1e-6 for n in out.neighbors)


def test_score_accepts_sdk_images_paths_pil_and_arrays(gan, tmp_path):
    images = gan.generate(n=3, seed=0, labels=[0, 1, 2])
    path = images[1].save(tmp_path / "one.png")
    scored = gan.score([images[0], path, images[2].pil, images[2].array], labels=[0, 1, 2, 2])
    assert len(scored.scores) == 4 and scored.set.n == 4
    assert all(0.0 <= s.realness <= 1.0 and 0.0 <= s.confidence <= 1.0 for s in scored.scores)


def test_models_model_health_ready(gan):
    listing = gan.models()
    assert {m.name for m in listing.models} == {"tiny-cgan", "tiny-gan"}
    assert gan.model("tiny-gan").kind == "unconditional"
    assert gan.health().status == "ok"
    assert gan.ready().ready is True


@pytest.mark.parametrize(
    ("call", "error", "status"),
    [
        (lambda g: g.model("nope"), NotFound, 404),
        (lambda g: g.generate(n=100_000), BadRequest, 422),
        (lambda g: g.generate(model="tiny-cgan", labels=7), BadRequest, 422),
    ],
)
def test_errors_map_to_the_exception_tree(gan, call, error, status):
    with pytest.raises(error) as info:
        call(gan)
    assert isinstance(info.value, APIError) and isinstance(info.value, GanServeError)
    assert info.value.status == status and info.value.detail


def test_the_server_limit_is_named_in_the_error(gan):
    with pytest.raises(BadRequest) as info:
        gan.generate(n=100_000)
    assert info.value.field == "n" and info.value.limit == 256


def test_local_validation_reads_like_the_services_422(gan):
    with pytest.raises(BadRequest) as info:
        gan.generate(truncation=-1)
    assert info.value.status == 422 and info.value.field == "truncation"


class Scripted(httpx.BaseTransport):
    """Answers with a scripted list of statuses and counts the attempts."""

    def __init__(self, statuses, headers=None, body=b'{"error":"x","detail":"scripted"}'):
        self.statuses, self.headers, self.body, self.calls = list(statuses), headers or {}, body, 0

    def handle_request(self, request):
        self.calls += 1
        status = self.statuses.pop(0) if self.statuses else 200
        if status == 200:
            return httpx.Response(200, json={"status": "ok"})
        return httpx.Response(status, content=self.body, headers=self.headers)


@pytest.mark.parametrize(
    ("status", "error"),
    [(400, BadRequest), (401, Unauthorized), (404, NotFound), (413, BadRequest), (422, BadRequest),
     (500, ServerError), (503, Overloaded), (504, DeadlineExceeded)],
)  # fmt: skip
def test_every_status_maps_to_its_exception(status, error):
    transport = Scripted([status], headers={"X-Request-ID": "req-1"})
    with GanClient("http://x", transport=transport, retries=0) as g, pytest.raises(error) as info:
        g.health()
    assert (
        info.value.status == status and info.value.request_id == "req-1" and info.value.detail == "scripted"
    )


@pytest.mark.parametrize(
    ("status", "code", "error"),
    [(503, "model_unavailable", ModelUnavailable), (503, "shutting_down", Overloaded),
     (503, "overloaded", Overloaded), (413, "payload_too_large", BadRequest),
     (404, "model_not_found", NotFound), (500, "internal_error", ServerError)],
)  # fmt: skip
def test_the_error_code_picks_the_exception_over_the_status(status, code, error):
    body = f'{{"error":"{code}","detail":"d","field":"model","limit":null}}'.encode()
    transport = Scripted([status] * 5, headers={"Retry-After": "0"}, body=body)
    with (
        GanClient("http://x", transport=transport, retries=2, backoff=0.001) as g,
        pytest.raises(error) as info,
    ):
        g.health()
    assert type(info.value) is error and info.value.code == code and info.value.field == "model"
    assert transport.calls == (3 if error is Overloaded else 1)  # only overload is retried


def test_retry_on_503_honours_retry_after_and_is_bounded():
    transport = Scripted([503, 503, 200], headers={"Retry-After": "0.05"})
    started = time.monotonic()
    with GanClient("http://x", transport=transport, retries=3, backoff=0.001) as g:
        assert g.health().status == "ok"
    assert transport.calls == 3 and time.monotonic() - started >= 0.1  # waited Retry-After twice
    always = Scripted([503] * 10, headers={"Retry-After": "0"})
    with GanClient("http://x", transport=always, retries=2, backoff=0.001) as g, pytest.raises(Overloaded):
        g.health()
    assert always.calls == 3  # one try + 2 retries
    slow = Scripted([503] * 10, headers={"Retry-After": "5"})
    with (
        GanClient("http://x", transport=slow, retries=5, max_retry_seconds=1) as g,
        pytest.raises(Overloaded),
    ):
        g.health()
    assert slow.calls == 1  # waiting 5 s would pass the 1 s retry budget: give up at once


def test_no_retry_on_422():
    transport = Scripted([422, 200])
    with GanClient("http://x", transport=transport, retries=5) as g, pytest.raises(BadRequest):
        g.health()
    assert transport.calls == 1


def test_connection_errors_are_retried_then_raised():
    calls = []

    def refuse(request):
        calls.append(request)
        raise httpx.ConnectError("refused", request=request)

    transport = httpx.MockTransport(refuse)
    with (
        GanClient("http://x", transport=transport, retries=2, backoff=0.001) as g,
        pytest.raises(TransportError),
    ):
        g.health()
    assert len(calls) == 3


def test_api_key_is_sent_as_bearer():
    seen = []

    def handler(request):
        seen.append(request.headers.get("authorization"))
        return httpx.Response(200, json={"status": "ok"})

    with GanClient("http://x", transport=httpx.MockTransport(handler), api_key="s3cret") as g:
        g.health()
    assert seen == ["Bearer s3cret"]


@pytest.mark.anyio
async def test_async_client_mirrors_the_sync_one(app):
    from conftest import started

    async with started(app):
        transport = httpx.ASGITransport(app=app)
        async with AsyncGanClient("http://test", transport=transport, retries=0) as g:
            result = await g.generate(n=3, seed=10, labels=2)
            assert [img.seed for img in result] == [10, 11, 12]
            walk = await g.interpolate(keyframes=[{"seed": 1}, {"seed": 2}], steps=3)
            assert len(walk) == 4
            arith = await g.arithmetic(terms=[{"seeds": [1]}], neighbors=1, seed=0)
            assert len(arith.neighbors) == 1
            scored = await g.score([result[0]])
            assert scored.set.n == 1
            raw = await g.generate_array(n=3, seed=10, labels=2)
            assert raw.seeds == [10, 11, 12] and raw.labels == [2, 2, 2]
            np.testing.assert_array_equal(raw.images, result.arrays)
            assert (await g.models()).default == "tiny-cgan"
            assert (await g.model("tiny-cgan")).kind == "conditional"
            assert (await g.health()).status == "ok" and (await g.ready()).ready
            with pytest.raises(NotFound):
                await g.model("missing")


@pytest.mark.anyio
async def test_async_retry_on_503():
    class AsyncScripted(httpx.AsyncBaseTransport):
        def __init__(self):
            self.calls = 0

        async def handle_async_request(self, request):
            self.calls += 1
            if self.calls < 3:
                return httpx.Response(503, json={"detail": "busy"}, headers={"Retry-After": "0"})
            return httpx.Response(200, json={"status": "ok"})

    transport = AsyncScripted()
    async with AsyncGanClient("http://x", transport=transport, retries=3, backoff=0.001) as g:
        assert (await g.health()).status == "ok"
    assert transport.calls == 3


def test_generate_array_is_one_uint8_array_with_seeds_and_labels(gan):
    """`Accept: application/x-npy`: the same pixels as the PNG images, seeds and labels from headers."""
    raw = gan.generate_array(n=5, seed=20)
    pngs = gan.generate(n=5, seed=20)
    assert raw.images.dtype == np.uint8 and raw.images.shape == (5, 8, 8) and len(raw) == 5
    np.testing.assert_array_equal(raw.images, pngs.arrays)
    assert raw.seeds == [20, 21, 22, 23, 24] and raw.labels == [img.label for img in pngs]
    plain = gan.generate_array(model="tiny-gan", seeds=[3, 1])
    assert plain.seeds == [3, 1] and plain.labels is None
    with pytest.raises(BadRequest):
        gan.generate_array(n=0)


def test_against_a_real_uvicorn(live_server):
    with GanClient(live_server, timeout=10) as g:
        assert g.ready().ready
        result = g.generate(n=2, seed=3)
        assert len(result) == 2
        with pytest.raises(NotFound):
            g.model("nope")


def test_nothing_listening_is_a_transport_error():
    from conftest import free_port

    with (
        GanClient(f"http://127.0.0.1:{free_port()}", retries=1, backoff=0.001) as g,
        pytest.raises(TransportError),
    ):
        g.health()


# --- the real service's errors, end to end ---------------------------------------------------------


class Gate:
    """Wraps a model's run_fn so inference blocks until `open` is set (10 s at most)."""

    def __init__(self, run_fn):
        self.run_fn, self.open = run_fn, threading.Event()

    def __call__(self, inputs):
        self.open.wait(10)
        return self.run_fn(inputs)


def gate_generator(app) -> Gate:
    gen = app.state.registry.models["tiny-cgan"].generator
    gen.run_fn = Gate(gen.run_fn)
    return gen.run_fn


class CountingASGI(httpx.ASGITransport):
    calls = 0

    async def handle_async_request(self, request):
        self.calls += 1
        return await super().handle_async_request(request)


class CountingHTTPTransport(httpx.BaseTransport):
    """Counts the requests sent through another transport."""

    def __init__(self, inner: httpx.BaseTransport):
        self.inner, self.calls = inner, 0

    def handle_request(self, request):
        self.calls += 1
        return self.inner.handle_request(request)


class CountingHTTP(httpx.HTTPTransport):
    calls = 0

    def handle_request(self, request):
        self.calls += 1
        return super().handle_request(request)


def test_real_401_and_413(make_settings):
    from starlette.testclient import TestClient

    from service.app import create_app

    with TestClient(create_app(make_settings(api_keys="k1-secret", max_upload_bytes=2048))) as c:
        with GanClient("http://testserver", transport=c._transport, retries=3) as anonymous:
            assert anonymous.health().status == "ok"  # an open path
            with pytest.raises(Unauthorized) as info:
                anonymous.generate(n=1)
            assert info.value.status == 401 and info.value.request_id
        with GanClient("http://testserver", transport=c._transport, api_key="k1-secret") as gan:
            assert len(gan.generate(n=1)) == 1
            noise = np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)  # ~5 KB of PNG
            with pytest.raises(BadRequest) as info:
                gan.score([noise])
            assert info.value.status == 413 and info.value.code == "payload_too_large"


def test_a_model_that_failed_to_load_is_model_unavailable_and_not_retried(tmp_path, make_settings):
    from modelkit import make_model_dir
    from starlette.testclient import TestClient

    from service.app import create_app

    make_model_dir(tmp_path, "good")
    (make_model_dir(tmp_path, "broken") / "generator.onnx").write_bytes(b"garbage")
    with TestClient(create_app(make_settings(models_dir=tmp_path, default_model="good"))) as c:
        counting = CountingHTTPTransport(c._transport)
        with GanClient("http://testserver", transport=counting, retries=3) as g:
            with pytest.raises(ModelUnavailable) as info:
                g.generate(model="broken")
            assert info.value.status == 503 and info.value.code == "model_unavailable"
            assert info.value.retry_after == 1.0 and counting.calls == 1
            assert len(g.generate(model="good")) == 1


@pytest.mark.anyio
async def test_a_full_queue_is_503_retried_after_retry_after_and_a_stale_request_is_504(make_settings):
    from conftest import started

    from service.app import create_app

    app = create_app(make_settings(max_queue_rows=4, request_timeout_s=0.3, inference_threads=1))
    async with started(app):
        gate = gate_generator(app)
        patient_transport = CountingASGI(app=app)
        async with (
            AsyncGanClient("http://test", transport=httpx.ASGITransport(app=app), retries=0) as once,
            AsyncGanClient("http://test", transport=patient_transport, retries=3, backoff=0.01) as patient,
        ):
            first = asyncio.ensure_future(once.generate(n=1))  # holds the only inference thread
            await asyncio.sleep(0.05)
            queued = asyncio.ensure_future(once.generate(n=4))  # fills the queue (4 rows)
            await asyncio.sleep(0.05)
            with pytest.raises(Overloaded) as info:
                await once.generate(n=1)
            error = info.value
            assert error.status == 503 and error.retry_after == 1.0 and error.code == "overloaded"
            assert error.request_id

            t0 = time.monotonic()
            retried = asyncio.ensure_future(patient.generate(n=1, seed=3))  # refused, waits 1 s
            await asyncio.sleep(0.35)  # meanwhile the queued request's 0.3 s deadline passes
            gate.open.set()
            assert len(await first) == 1
            with pytest.raises(DeadlineExceeded) as info:
                await queued
            assert info.value.status == 504 and info.value.code == "deadline_exceeded"
            assert (await retried)[0].seed == 3
            assert patient_transport.calls == 2 and time.monotonic() - t0 >= 1.0


def test_a_read_timeout_is_a_transport_error_and_is_not_retried(app, live_server):
    gate = gate_generator(app)
    sync_transport = CountingHTTP()
    try:
        with (
            GanClient(live_server, timeout=0.3, retries=3, transport=sync_transport) as g,
            pytest.raises(TransportError) as info,
        ):
            g.generate(n=1)
        assert sync_transport.calls == 1 and "ReadTimeout" in str(info.value)

        async def async_timeout():
            async with AsyncGanClient(live_server, timeout=0.3, retries=3) as g:
                with pytest.raises(TransportError):
                    await g.generate(n=1)

        asyncio.run(async_timeout())
    finally:
        gate.open.set()


def test_every_method_over_uvicorn_sync_and_async(live_server, tmp_path):
    def check(results):
        generated, walk, arith, scored, listing, info, health, ready = results
        assert [img.seed for img in generated] == [3, 4] and generated[0].latent.shape == (8,)
        assert len(walk) == 3 and walk[-1].t == 1.0
        assert len(arith.neighbors) == 1
        assert scored.set.n == 2
        assert listing.default == "tiny-cgan" and info.name == "tiny-gan"
        assert health.status == "ok" and ready.ready

    with GanClient(live_server, timeout=10) as g:
        generated = g.generate(n=2, seed=3, labels=1, return_latents=True)
        sync_results = [
            generated,
            g.interpolate(keyframes=[{"seed": 1}, {"seed": 2}], steps=2),
            g.arithmetic(terms=[{"seeds": [1, 2]}], neighbors=1, seed=0),
            g.score(list(generated)),
            g.models(),
            g.model("tiny-gan"),
            g.health(),
            g.ready(),
        ]
        check(sync_results)

    async def run_async():
        async with AsyncGanClient(live_server, timeout=10) as g:
            generated = await g.generate(n=2, seed=3, labels=1, return_latents=True)
            results = [
                generated,
                await g.interpolate(keyframes=[{"seed": 1}, {"seed": 2}], steps=2),
                await g.arithmetic(terms=[{"seeds": [1, 2]}], neighbors=1, seed=0),
                await g.score(list(generated)),
                await g.models(),
                await g.model("tiny-gan"),
                await g.health(),
                await g.ready(),
            ]
            with pytest.raises(BadRequest):
                await g.generate(n=100_000)
            return results

    async_results = asyncio.run(run_async())
    check(async_results)
    assert np.array_equal(async_results[0].arrays, sync_results[0].arrays)  # same seeds, same pixels
