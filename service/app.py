"""The app factory and lifespan: load the models on start, drain the queues on stop.

Why a factory: tests and uvicorn workers each build their own app from a `Settings`; models load
in the lifespan (in a thread), never at import. The ASGI middleware here is the only per-request
wrapper: request metrics, the upload-size guard (413 before the body is read whole), the
503 for new work while draining, and request IDs (`X-Request-ID` on every response, `request_id` in
every JSON error body, logged with every error). API keys and CORS: `service.auth`, both off
unless configured.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware

from . import metrics
from .api import add_body_schemas, install_error_handlers, router
from .auth import REQUEST_ID_HEADER, ApiKeyMiddleware, request_id
from .registry import Registry
from .settings import Settings
from .web import PAGE_PATHS, install_page

log = logging.getLogger("service")


class ServiceMiddleware:
    """Pure ASGI (cheaper than BaseHTTPMiddleware): metrics, body-size guard, draining."""

    def __init__(self, app, fastapi_app: FastAPI):
        self.app = app
        self.fastapi_app = fastapi_app
        self.inflight = 0  # POST requests between this middleware and their reply (this process)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        state = self.fastapi_app.state
        settings: Settings = state.settings
        limit = settings.max_upload_bytes
        method = scope["method"]
        t0 = time.perf_counter()
        status = 500
        rid = request_id(scope)
        counted = False
        started = False
        held: list[dict] = []  # a JSON error response, held to add `request_id` to its body

        async def send_wrapper(message):
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
                message["headers"] = [
                    *(h for h in message.get("headers", ()) if h[0].lower() != REQUEST_ID_HEADER),
                    (REQUEST_ID_HEADER, rid.encode()),
                ]
                if status >= 400:
                    # 503/504 are the service shedding load as designed (counted in
                    # ganserve_requests_total): INFO, or an overload would flood the log
                    log.log(
                        logging.ERROR if status == 500 else logging.INFO,
                        "request %s: %s %s -> %d",
                        rid,
                        method,
                        scope.get("path"),
                        status,
                    )
                    ctype = dict((k.lower(), v) for k, v in message["headers"]).get(b"content-type", b"")
                    if ctype.startswith(b"application/json"):
                        held.append(message)
                        return
            elif held and message["type"] == "http.response.body":
                held.append(message)
                if message.get("more_body"):
                    return
                return await send_json_error(send, held, rid)
            await send(message)

        try:
            if method == "POST" and getattr(state, "draining", False):
                status = 503
                return await _reply(
                    send, 503, "shutting_down", "the service is shutting down", settings, rid=rid
                )
            if method == "POST":
                # Admission before any parsing: when HTTP handling, not inference, is the
                # bottleneck (single-image requests), the batcher's row bound never fills and
                # requests would wait unboundedly in the event loop (docs/BENCHMARKS.md).
                cap = settings.max_inflight_requests
                if cap and self.inflight >= cap:  # the cheapest reply there is: sent as is
                    status = 503
                    return await _reply(
                        send,
                        503,
                        "overloaded",
                        f"{self.inflight} requests in progress (limit {cap}); retry later",
                        settings,
                        cap,
                        rid=rid,
                    )
                self.inflight += 1
                counted = True
            length = _content_length(scope)
            if length is not None and length > limit:
                return await _reply(
                    send_wrapper,
                    413,
                    "payload_too_large",
                    f"body: {length} bytes exceeds the limit of {limit} bytes",
                    settings,
                    limit,
                )
            received = 0

            async def receive_limited():
                nonlocal received
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > limit:
                        raise HTTPException(413, f"body: more than the limit of {limit} bytes")
                return message

            await self.app(scope, receive_limited if method == "POST" else receive, send_wrapper)
        except Exception:
            log.exception("request %s: %s %s failed", rid, method, scope.get("path"))
            if started:  # nothing more can be sent
                raise
            await _reply(send_wrapper, 500, "internal_error", f"internal error (request {rid})", settings)
        finally:
            if counted:
                self.inflight -= 1
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "unmatched"
            metrics.REQUESTS.labels(endpoint, method, str(status)).inc()
            metrics.REQUEST_SECONDS.labels(endpoint).observe(time.perf_counter() - t0)


async def send_json_error(send, held: list[dict], rid: str) -> None:
    """Send a held JSON error response with `request_id` added to its body."""
    start, raw = held[0], b"".join(m.get("body", b"") for m in held[1:])
    try:
        data = json.loads(raw)
        if isinstance(data, dict) and "error" in data:  # error bodies only (not /readyz)
            data["request_id"] = rid
            raw = json.dumps(data).encode()
    except ValueError:
        pass
    start["headers"] = [h for h in start["headers"] if h[0].lower() != b"content-length"]
    start["headers"].append((b"content-length", str(len(raw)).encode()))
    await send(start)
    await send({"type": "http.response.body", "body": raw})


def _content_length(scope) -> int | None:
    for k, v in scope["headers"]:
        if k == b"content-length":
            try:
                return int(v)
            except ValueError:
                return None
    return None


async def _reply(send, status, code, detail, settings: Settings, limit=None, rid: str | None = None):
    """An error reply made here. With `rid`, it is complete (request ID in header and body) and
    goes straight to the server's `send`, skipping the wrapper that would parse it again."""
    error = {"error": code, "detail": detail, "field": "body" if status == 413 else None, "limit": limit}
    if rid is not None:
        error["request_id"] = rid
    body = json.dumps(error)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if rid is not None:
        headers.append((REQUEST_ID_HEADER, rid.encode()))
    if status == 503:
        headers.append((b"retry-after", str(settings.retry_after_s).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body.encode()})


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app for `settings` (default: from GANSERVE_* environment variables)."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        registry = Registry(settings)
        app.state.registry = registry
        app.state.draining = False
        await asyncio.to_thread(registry.load_all)
        registry.start()
        log.info(
            "serving %d model(s) from %s (default %s); failed: %s",
            len(registry.models),
            settings.models_dir,
            registry.default_name,
            sorted(registry.failed) or "none",
        )
        try:
            yield
        finally:
            app.state.draining = True
            await registry.close(settings.drain_timeout_s)
            log.info("drained and stopped")

    app = FastAPI(
        title="ganserve",
        version="0.1.0",
        summary="GAN generators served with ONNX Runtime and dynamic batching",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.registry = Registry(settings)  # empty until the lifespan loads the models
    app.state.draining = False
    install_error_handlers(app)
    app.include_router(router)
    install_page(app)
    app.add_middleware(
        ApiKeyMiddleware, keys=settings.api_key_list, open_paths=settings.open_path_set | PAGE_PATHS
    )
    if settings.cors_origin_list:  # off unless GANSERVE_CORS_ORIGINS is set
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origin_list,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "X-API-Key", "X-Request-ID", "Content-Type", "Accept"],
            expose_headers=["X-Request-ID", "Retry-After", "X-Seed"],
        )
    app.add_middleware(ServiceMiddleware, fastapi_app=app)
    default_openapi = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            add_body_schemas(default_openapi())
        return app.openapi_schema

    app.openapi = openapi
    return app
