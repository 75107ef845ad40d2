"""Request plumbing shared by every route: parse, run through a batcher, and the one error path.

Why one module: a route should read as its domain logic only. Here live the only translation
from domain errors (`service.errors`) to HTTP statuses (`STATUS`), the only error body
(`error_body`, with the request ID written when the body is made, so nothing downstream re-parses
it), the exception handlers, and the OpenAPI helpers a route uses to declare its own body.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import numpy as np
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from .auth import header, request_id
from .batcher import Batcher, PostFn
from .errors import (
    ClientGone,
    DeadlineExceeded,
    InferenceFailed,
    InternalError,
    InvalidInput,
    ModelNotFound,
    ModelUnavailable,
    NotAcceptable,
    Overloaded,
    PayloadTooLarge,
    RequestTimeout,
    ServiceError,
    ShuttingDown,
    UnsupportedMediaType,
    clip,
)
from .registry import Model, Registry, valid_name
from .schemas import ErrorBody
from .settings import Settings

# --- the one translation point: domain error -> HTTP status ----------------------------------

STATUS: dict[type[ServiceError], int] = {
    InvalidInput: 422,
    PayloadTooLarge: 413,
    UnsupportedMediaType: 415,
    RequestTimeout: 408,
    ModelNotFound: 404,
    NotAcceptable: 406,
    ModelUnavailable: 503,
    Overloaded: 503,
    ShuttingDown: 503,
    DeadlineExceeded: 504,
    ClientGone: 499,
    InferenceFailed: 500,
    InternalError: 500,
}
RETRY_AFTER = (Overloaded, ShuttingDown, ModelUnavailable)
# Starlette's own errors (unknown path, wrong method, multipart limits) by status
HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}


def error_body(
    code: str, detail: str, rid: str, *, field: str | None = None, limit: int | float | None = None
) -> bytes:
    """The JSON body of every error reply (`schemas.ErrorBody`), request ID included."""
    body = {"error": code, "detail": detail, "field": field, "limit": limit, "request_id": rid}
    return json.dumps(body, separators=(",", ":")).encode()


def error_reply(status: int, body: bytes, headers: dict[str, str] | None = None) -> Response:
    return Response(body, status_code=status, headers=headers, media_type="application/json")


def error_response(exc: ServiceError, rid: str, retry_after_s: int) -> Response:
    """A domain error as its HTTP reply: complete, request ID in body and header, so the
    middleware may send it (it is an ASGI app) straight to the server."""
    status = next((s for t, s in STATUS.items() if isinstance(exc, t)), 500)
    headers = {"X-Request-ID": rid}
    if isinstance(exc, RETRY_AFTER):
        headers["Retry-After"] = str(retry_after_s)
    body = error_body(exc.code, exc.detail, rid, field=exc.field, limit=exc.limit)
    return error_reply(status, body, headers)


_TYPE_TAGS = {"int", "float", "str", "bool", "list", "dict", "none"}


def _loc(loc) -> str:
    """('body', 'keyframes', 1, 'latent') -> 'keyframes[1].latent' (union member tags dropped)."""
    parts = [
        str(p)
        for p in loc
        if p not in ("body", "query", "path")
        and not (isinstance(p, str) and (set(p) & set("[]-(") or p in _TYPE_TAGS))
    ]
    out = ""
    for p in parts:
        out += f"[{p}]" if p.isdigit() else (f".{p}" if out else p)
    return (out if len(out) <= 100 else out[:100] + "...") or "body"


def validation_response(errors: list[dict], rid: str) -> Response:
    """pydantic/FastAPI validation errors -> 422 with the first offending field named."""
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    field = _loc(first.get("loc", ()))
    detail = "; ".join(f"{_loc(e.get('loc', ()))}: {e.get('msg')}" for e in errors[:5])
    limit = (first.get("ctx") or {}).get("le") or (first.get("ctx") or {}).get("max_length")
    limit = limit if isinstance(limit, int | float) and not isinstance(limit, bool) else None
    return error_reply(422, error_body("invalid_input", detail, rid, field=field, limit=limit))


def install_error_handlers(app: FastAPI) -> None:
    retry = app.state.settings.retry_after_s

    async def on_service_error(request: Request, exc: ServiceError):
        return error_response(exc, request_id(request.scope), retry)

    async def on_validation(request: Request, exc: RequestValidationError):
        return validation_response(list(exc.errors()), request_id(request.scope))

    async def on_http(request: Request, exc: HTTPException):
        code = HTTP_CODES.get(exc.status_code, "http_error")
        body = error_body(code, str(exc.detail), request_id(request.scope))
        return error_reply(exc.status_code, body, getattr(exc, "headers", None))

    app.add_exception_handler(ServiceError, on_service_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(HTTPException, on_http)


# --- OpenAPI: each route declares its own body and error replies -------------------------------


def error_responses(model: type[BaseModel], described: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    """FastAPI `responses=` for error statuses that all answer with `model`'s body."""
    return {status: {"model": model, "description": text} for status, text in described.items()}


ERRORS = error_responses(
    ErrorBody,
    {
        404: "unknown model",
        413: "body over the upload limit or the JSON value limit",
        415: "body not application/json (or multipart/form-data where the route reads it)",
        422: "invalid input or a limit exceeded",
        503: "overloaded, shutting down or model unavailable (Retry-After)",
        504: "deadline passed while queued",
    },
)


def body(model: type[BaseModel], other: dict[str, dict] | None = None):
    """Route decorator: the handler parses its body itself (`parse`; FastAPI never sees it), so
    the route declares it here for OpenAPI: `model` as application/json, plus `other` media types
    (media type -> schema). A POST route without it fails tests/test_service_api.py."""

    def mark(handler):
        handler.openapi_body = (model, other or {})
        return handler

    return mark


def install_openapi(app: FastAPI, routers: list[APIRouter]) -> None:
    """Add the request body of each `@body` route of `routers` to the OpenAPI document, after
    FastAPI has built it (its schema model would round integer bounds such as 2**63 - 1 to floats)."""
    build = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            doc = build()
            comps = doc.setdefault("components", {}).setdefault("schemas", {})
            for route in (r for router in routers for r in router.routes):
                marked = getattr(getattr(route, "endpoint", None), "openapi_body", None)
                if marked is None:
                    continue
                model, other = marked
                schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
                for name, sub in schema.pop("$defs", {}).items():
                    comps.setdefault(name, sub)
                comps.setdefault(model.__name__, schema)
                ref = {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
                content = {"application/json": ref} | {media: {"schema": s} for media, s in other.items()}
                for method in route.methods:
                    doc["paths"][route.path][method.lower()]["requestBody"] = {
                        "required": True,
                        "content": content,
                    }
        return app.openapi_schema

    app.openapi = openapi


# --- parse, look up, run ------------------------------------------------------------------------


INLINE_PARSE_BYTES = 32 * 1024  # larger bodies are validated in a thread (~40 ns a byte: ~1 ms here)


def check_json_media(scope) -> None:
    """415 unless the body says it is JSON: `text/plain` (or a form, or no type) is what a page on
    any site may send without a CORS preflight, so it never reaches a JSON endpoint."""
    ctype = header(scope, b"content-type")
    media = (ctype or b"").split(b";", 1)[0].strip().lower()
    if media == b"application/json" or (media.startswith(b"application/") and media.endswith(b"+json")):
        return
    shown = clip(media.decode("latin-1")) if ctype is not None else "missing"
    raise UnsupportedMediaType(
        f"content-type: {shown}; this endpoint reads application/json", field="content-type"
    )


def json_values(raw: bytes) -> int:
    """About how many values a JSON text holds, before it is parsed (three C-speed scans: every
    array item or object member but a container's first follows a comma), so no parser builds a
    tree larger than any request needs: 8 MB of `{},` would cost pydantic ~0.5 s and ~300 MB."""
    return raw.count(b",") + raw.count(b"[") + raw.count(b"{")


def _validate(model: type[BaseModel], raw: bytes, max_values: int):
    """Count the JSON values first (`json_values`), then validate in one step."""
    values = json_values(raw)
    if values > max_values:
        raise PayloadTooLarge(
            f"body: about {values} JSON values exceeds the limit of {max_values}",
            field="body",
            limit=max_values,
        )
    try:
        return model.model_validate_json(raw, strict=True)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False, include_input=False)) from None


async def parse(request: Request, model: type[BaseModel]):
    """Raw bytes -> pydantic in one step (`model_validate_json`): cheaper than FastAPI's body
    handling (json.loads, then validation, then dependency solving) on the hot path. Strict: a
    string or a boolean where the schema says integer is a 422, not silently coerced (fuzzing).
    JSON only (415 otherwise); list lengths are bounded in the schemas and checked fail-fast while
    parsing; a body over `INLINE_PARSE_BYTES` is validated in a thread, so no request holds the
    event loop for more than about a millisecond."""
    check_json_media(request.scope)
    raw = await request.body()  # already read whole by the middleware: no wait here
    max_values = request.app.state.settings.max_json_values
    if len(raw) <= INLINE_PARSE_BYTES:
        return _validate(model, raw, max_values)
    return await run_in_threadpool(_validate, model, raw, max_values)


def state(request: Request) -> tuple[Registry, Settings]:
    st = request.app.state
    return st.registry, st.settings


def find_model(registry: Registry, name: str | None, version: str | None = None) -> Model:
    """The named model (or the default) at `version` (or its newest); a path-like name is a 422,
    never a file lookup."""
    if name is not None and not valid_name(name):
        raise InvalidInput(f"model: {clip(name)} is not a valid model name", field="model")
    return registry.get(name, version)


async def parse_for_model(request: Request, schema: type[BaseModel]) -> tuple[Any, Model, Settings]:
    """A body that names a `model`: (the body, that model or the default, the settings)."""
    body = await parse(request, schema)
    registry, settings = state(request)
    return body, find_model(registry, body.model, getattr(body, "version", None)), settings


def check_label_range(k: int, labels, field: str) -> None:
    for i, lab in enumerate(labels):
        if lab >= k:
            raise InvalidInput(
                f"{field}[{i}]: label {lab} is out of range 0..{k - 1}", field=field, limit=k - 1
            )


async def _watch_disconnect(receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def run_batched(
    request: Request, batcher: Batcher, feeds: dict[str, np.ndarray], post: PostFn | None = None
) -> list:
    """Queue `feeds` and await the rows; if the client goes away first, drop the request."""
    entry = batcher.enqueue(feeds, post)
    watcher = asyncio.ensure_future(_watch_disconnect(request.receive))
    watcher.add_done_callback(lambda w: w.cancelled() or w.exception() or entry.future.cancel())
    try:
        return await entry.future
    except asyncio.CancelledError:
        if watcher.done() and not watcher.cancelled():
            raise ClientGone("client disconnected before the request ran") from None
        raise
    finally:
        watcher.cancel()
