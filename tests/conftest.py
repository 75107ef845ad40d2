"""Shared fixtures for the service tests (and the SDK, reliability, docker and web tests).

Stable interface (other test files rely on these names):
- `model_root` (session): a directory holding two tiny model directories built by
  `tests/modelkit.py`: `tiny-cgan` (conditional, latent 8, 3 classes, 1x8x8) and `tiny-gan`
  (unconditional, same shapes). Treat it as read-only; make your own with `make_model_dir`.
- `settings`: `service.settings.Settings` serving `model_root` with `tiny-cgan` as default and
  small, fast limits left at their defaults.
- `make_settings(**overrides)`: the same settings with fields replaced.
- `app`: `service.app.create_app(settings)`, lifespan not started.
- `client`: a started app behind `starlette.testclient.TestClient` (sync, httpx API, real ASGI).
- `async_client`: for `@pytest.mark.anyio` tests: a started app behind
  `httpx.AsyncClient(transport=httpx.ASGITransport(app))`, base URL http://test.
- `live_server`: a real uvicorn on 127.0.0.1 (free port) in a thread; yields the base URL.
- `anyio_backend`: "asyncio" (anyio's pytest plugin runs the async tests).
"""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import modelkit  # noqa: E402

DEFAULT_TEST_MODEL = "tiny-cgan"

# Starlette 1.x asks for `httpx2` for its TestClient (warning once, at import); plain httpx works.
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import starlette.testclient  # noqa: F401


@pytest.fixture(scope="session")
def anyio_backend():
    return "asyncio"


@pytest.fixture(scope="session")
def model_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("models")
    modelkit.make_model_dir(root, "tiny-cgan", conditional=True)
    modelkit.make_model_dir(root, "tiny-gan", conditional=False, seed=1)
    return root


@pytest.fixture
def make_settings(model_root):
    from service.settings import Settings

    def make(**overrides):
        # the CPU's behaviour on every machine; tests/test_gpu.py holds CUDA to the same rules
        values = {"models_dir": model_root, "default_model": DEFAULT_TEST_MODEL, "provider": "cpu"}
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture
def settings(make_settings):
    return make_settings()


@pytest.fixture
def app(settings):
    from service.app import create_app

    return create_app(settings)


@pytest.fixture
def client(app):
    from starlette.testclient import TestClient

    with TestClient(app) as c:
        yield c


@contextlib.asynccontextmanager
async def started(app):
    """Run the app's lifespan (models loaded, batchers running) around a block."""
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
async def async_client(app):
    import httpx

    async with started(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=30) as c:
            yield c


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def run_uvicorn(app, port: int | None = None):
    """A real uvicorn serving `app` on 127.0.0.1 in a thread; yields (server, base_url)."""
    import uvicorn

    port = port or free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield server, f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture
def live_server(app):
    with run_uvicorn(app) as (_, url):
        yield url
