"""The app factory and lifespan: load the models on start, drain the queues on stop.

Why a factory: tests and uvicorn workers each build their own app from a `Settings`; models load
in the lifespan (in a thread), never at import. This module only wires: the routes
(`service.routes`), the error handlers (`service.plumbing`), the web page, and the middleware.
The ASGI middleware here is the only per-request wrapper: request metrics, admission (503 for new
work over `max_inflight_requests` or while draining, counted in `ganserve_rejected_total`), the
upload-size guard (413 before the body is read whole), and request IDs (`X-Request-ID` on every
response and logged with every error; error bodies carry it from `plumbing.error_body`). API
keys and CORS: `service.auth`, both off unless configured.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from . import __version__, metrics
from .auth import REQUEST_ID_HEADER, ApiKeyMiddleware, request_id
from .errors import InternalError, Overloaded, PayloadTooLarge, ServiceError, ShuttingDown
from .plumbing import error_response, install_error_handlers, install_openapi
from .registry import Registry
from .routes import generate, models, score
from .settings import Settings
from .web import PAGE_PATHS, install_page

log = logging.getLogger("service")


class ServiceMiddleware:
    """Pure ASGI (cheaper than BaseHTTPMiddleware): request IDs, metrics, admission, body-size guard."""

    def __init__(self, app, fastapi_app: FastAPI):
        self.app = app
        self.fastapi_app = fastapi_app
        self.inflight = 0  # POST requests between this middleware and their reply (this process)

    def _refusal(self, state, settings: Settings) -> ServiceError | None:
        """Why a POST is not admitted now (counted by reason), or None to admit it.

        Admission before any parsing: when HTTP handling, not inference, is the bottleneck
        (single-image requests), the batcher's row bound never fills and requests would wait
        unboundedly in the event loop (docs/BENCHMARKS.md). A full queue is refused later, by the
        batcher, with the same body."""
        cap = settings.max_inflight_requests
        if getattr(state, "draining", False):
            reason, error = "shutting_down", ShuttingDown("the service is shutting down")
        elif cap and self.inflight >= cap:
            detail = f"{self.inflight} requests in progress (limit {cap}); retry later"
            reason, error = "inflight", Overloaded(detail, limit=cap)
        else:
            return None
        metrics.ADMISSION_REJECTED[reason].inc()
        return error

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
            await send(message)

        def reply(error: ServiceError):
            return error_response(error, rid, settings.retry_after_s)(scope, receive, send_wrapper)

        try:
            if method == "POST":
                refusal = self._refusal(state, settings)
                if refusal is not None:  # the cheapest reply there is: straight to the server
                    status = 503
                    return await error_response(refusal, rid, settings.retry_after_s)(scope, receive, send)
                self.inflight += 1
                counted = True
            length = _content_length(scope)
            if length is not None and length > limit:
                detail = f"body: {length} bytes exceeds the limit of {limit} bytes"
                return await reply(PayloadTooLarge(detail, field="body", limit=limit))
            received = 0

            async def receive_limited():
                nonlocal received
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > limit:
                        detail = f"body: more than the limit of {limit} bytes"
                        raise PayloadTooLarge(detail, field="body", limit=limit)
                return message

            await self.app(scope, receive_limited if method == "POST" else receive, send_wrapper)
        except Exception:
            log.exception("request %s: %s %s failed", rid, method, scope.get("path"))
            if started:  # nothing more can be sent
                raise
            await reply(InternalError(f"internal error (request {rid})"))
        finally:
            if counted:
                self.inflight -= 1
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "unmatched"
            metrics.REQUESTS.labels(endpoint, method, str(status)).inc()
            metrics.REQUEST_SECONDS.labels(endpoint).observe(time.perf_counter() - t0)


def _content_length(scope) -> int | None:
    for k, v in scope["headers"]:
        if k == b"content-length":
            try:
                return int(v)
            except ValueError:
                return None
    return None


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
        version=__version__,
        summary="GAN generators served with ONNX Runtime and dynamic batching",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.registry = Registry(settings)  # empty until the lifespan loads the models
    app.state.draining = False
    install_error_handlers(app)
    routers = [generate.router, score.router, models.router]
    for router in routers:
        app.include_router(router)
    install_openapi(app, routers)
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
            expose_headers=["X-Request-ID", "Retry-After", "X-Seed", "X-Seeds", "X-Labels", "X-Label"],
        )
    app.add_middleware(ServiceMiddleware, fastapi_app=app)
    return app
