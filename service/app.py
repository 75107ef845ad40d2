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
import gc
import logging
import signal
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect

from . import __version__, metrics
from .auth import REQUEST_ID_HEADER, ApiKeyMiddleware, request_id
from .errors import (
    ClientGone,
    InternalError,
    Overloaded,
    PayloadTooLarge,
    RequestTimeout,
    ServiceError,
    ShuttingDown,
)
from .plumbing import error_response, install_error_handlers, install_openapi
from .registry import Registry
from .routes import admin, generate, models, score, v2
from .settings import Settings
from .web import PAGE_PATHS, install_page

log = logging.getLogger("service")


class ServiceMiddleware:
    """Pure ASGI (cheaper than BaseHTTPMiddleware): request IDs, metrics, body intake, admission.

    A POST body is read here, whole, before the request is admitted: within `body_timeout_s`
    (408), `max_upload_bytes` (413, from Content-Length before anything is read, else while it
    streams) and `max_buffered_bytes` over all bodies held (503). Only then does it count against
    `max_inflight_requests`, so clients that stall mid-body hold a socket, never a slot. A client
    that leaves mid-body is a 499 with one log line. HEAD is served as GET without the body."""

    def __init__(self, app, fastapi_app: FastAPI):
        self.app = app
        self.fastapi_app = fastapi_app
        self.inflight = 0  # POST requests admitted and not yet answered (this process)
        self.buffered = 0  # body bytes held by requests still sending or in progress (this process)

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

    async def _read_body(self, receive, settings: Settings, held: list[int]) -> bytes:
        """The whole body, or the ServiceError that ends the request (`held[0]`: bytes counted
        in `self.buffered` for this request; the caller gives them back)."""
        limit, cap = settings.max_upload_bytes, settings.max_buffered_bytes
        chunks, size = [], 0
        try:
            async with asyncio.timeout(settings.body_timeout_s):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        raise ClientGone("client disconnected while sending the body", field="body")
                    chunk = message.get("body", b"")
                    if chunk:
                        size += len(chunk)
                        if size > limit:
                            detail = f"body: more than the limit of {limit} bytes"
                            raise PayloadTooLarge(detail, field="body", limit=limit)
                        if self.buffered + len(chunk) > cap:
                            metrics.REJECTED.labels("", "", "buffered_bytes").inc()
                            detail = f"request bodies held exceed {cap} bytes; retry later"
                            raise Overloaded(detail, field="body", limit=cap)
                        self.buffered += len(chunk)
                        held[0] += len(chunk)
                        chunks.append(chunk)
                    if not message.get("more_body", False):
                        return b"".join(chunks)
        except TimeoutError:
            t = settings.body_timeout_s
            raise RequestTimeout(f"body: not received whole within {t:g} s", field="body", limit=t) from None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        state = self.fastapi_app.state
        settings: Settings = state.settings
        method = scope["method"]
        head = method == "HEAD"
        if head:  # served as GET; the server sends no body for HEAD, and neither do we
            scope = {**scope, "method": "GET"}
        t0 = time.perf_counter()
        status = 500
        rid = request_id(scope)
        counted = False
        started = False
        held = [0]

        async def send_wrapper(message):
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
                message["headers"] = [
                    *(h for h in message.get("headers", ()) if h[0].lower() != REQUEST_ID_HEADER),
                    (REQUEST_ID_HEADER, rid.encode()),
                    NOSNIFF,
                ]
                if status >= 400:
                    # 503/504 are the service shedding load as designed (counted in
                    # ganserve_requests_total): INFO, or an overload would flood the log
                    log.log(
                        logging.ERROR if status == 500 else logging.INFO,
                        "request %s: %s %s -> %d",
                        rid,
                        method,
                        printable(scope.get("path", "")),
                        status,
                    )
            elif head and message.get("body"):
                message = {**message, "body": b""}
            await send(message)

        def reply(error: ServiceError, *, close: bool = False):
            response = error_response(error, rid, settings.retry_after_s)
            if close:  # the rest of the body is never read: the connection cannot be reused
                response.headers["Connection"] = "close"
            return response(scope, receive, send_wrapper)

        try:
            if method == "POST":
                limit = settings.max_upload_bytes
                length = _content_length(scope)
                if length is not None and length > limit:
                    detail = f"body: {length} bytes exceeds the limit of {limit} bytes"
                    return await reply(PayloadTooLarge(detail, field="body", limit=limit), close=True)
                try:
                    body = await self._read_body(receive, settings, held)
                except ClientGone:
                    status = 499  # nobody to answer; counted and logged once, never a 500
                    log.info(
                        "request %s: %s %s -> 499 (client gone mid-body)",
                        rid,
                        method,
                        printable(scope.get("path", "")),
                    )
                    return
                except ServiceError as error:
                    return await reply(error, close=True)
                refusal = self._refusal(state, settings)
                if refusal is not None:  # the cheapest reply there is: straight to the server
                    status = 503
                    return await error_response(refusal, rid, settings.retry_after_s)(scope, receive, send)
                self.inflight += 1
                counted = True
                await self.app(scope, _replay(body, receive), send_wrapper)
            else:
                await self.app(scope, receive, send_wrapper)
        except ClientDisconnect:
            status = 499
            log.info("request %s: %s %s -> 499 (client gone)", rid, method, printable(scope.get("path", "")))
        except Exception:
            log.exception("request %s: %s %s failed", rid, method, printable(scope.get("path", "")))
            if started:  # nothing more can be sent
                raise
            await reply(InternalError(f"internal error (request {rid})"))
        finally:
            if counted:
                self.inflight -= 1
            self.buffered -= held[0]
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "unmatched"
            metrics.REQUESTS.labels(endpoint, method, str(status)).inc()
            metrics.REQUEST_SECONDS.labels(endpoint).observe(time.perf_counter() - t0)


NOSNIFF = (b"x-content-type-options", b"nosniff")


def _replay(body: bytes, receive):
    """A `receive` that hands the app the body already read, then the server's own messages
    (so a later `http.disconnect` still reaches `plumbing.run_batched`)."""
    pending = True

    async def replay():
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def printable(text: str, n: int = 200) -> str:
    """A client-controlled value for a log line: control and non-printable characters escaped
    (a path with %0a cannot start a forged line), cut to `n` characters."""
    text = repr(text[: n + 1])[1:-1]
    return text if len(text) <= n else text[:n] + "..."


def _content_length(scope) -> int | None:
    for k, v in scope["headers"]:
        if k == b"content-length":
            try:
                return int(v)
            except ValueError:
                return None
    return None


def _reload_on_sighup(app: FastAPI, registry: Registry, settings: Settings):
    """SIGHUP reloads the model directory (`Registry.reload`, as POST /admin/reload) in the
    background; returns the function that uninstalls the handler. Only the main thread takes
    signals (tests run uvicorn in a thread): elsewhere nothing is installed."""
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task] = set()

    def done(task: asyncio.Task) -> None:
        tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("SIGHUP reload failed: %r", task.exception())

    def on_hup() -> None:
        if app.state.draining:
            return
        log.info("SIGHUP: reloading models from %s", settings.models_dir)
        task = loop.create_task(registry.reload(settings.drain_timeout_s))
        tasks.add(task)
        task.add_done_callback(done)

    try:
        loop.add_signal_handler(signal.SIGHUP, on_hup)
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or no SIGHUP
        return lambda: None
    return lambda: loop.remove_signal_handler(signal.SIGHUP)


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
        # what start-up built (routes, schemas, sessions' metadata) lives as long as the process:
        # out of the collector's generations, full collections no longer rescan it under load
        gc.collect()
        gc.freeze()
        log.info(
            "serving %d model(s) from %s (default %s); failed: %s",
            len(registry.models),
            settings.models_dir,
            registry.default_name,
            sorted(registry.failed) or "none",
        )
        stop_reloading = _reload_on_sighup(app, registry, settings)
        try:
            yield
        finally:
            stop_reloading()
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
    routers = [generate.router, score.router, models.router, v2.router, admin.router]
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
