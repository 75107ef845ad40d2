"""Reply formats: one table, one negotiation, so a new format is one entry in `FORMATS`.

A format is decided once per request, before the batch: its `post` hook runs per entry in the
inference thread (PNG encoding never blocks the event loop), and its `render` turns the rows
into the reply after the batch. A route says which formats it offers besides JSON, in order;
`negotiate` picks the first whose media type `Accept` lists (the route's order, not q-values),
else JSON when `Accept` is absent or allows it (`application/json`, or any wildcard such as
`*/*` or `image/*`), else `NotAcceptable` (406): `Accept: text/html` on /generate is refused
rather than answered with something the client said it cannot read.

Formats: JSON (the default: base64 PNG per image plus what made it), `image/png` (one grid or
strip), `image/gif` (an animation), `application/x-npy` (one uint8 `.npy` array, shape
(n, h, w) for one channel, (n, h, w, c) otherwise; what made the images in `Reply.headers`).
"""

from __future__ import annotations

import io
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np
import orjson
from fastapi import Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from . import imaging
from .batcher import Outputs, PostFn
from .errors import NotAcceptable
from .schemas import ErrorBody

NPY = "application/x-npy"


@dataclass(frozen=True)
class Reply:
    """What a route knows about its reply; each format uses the parts it needs."""

    json: Callable[[list], dict]  # the JSON body from the rows (base64 PNG strings)
    layout: Literal["grid", "strip"] = "strip"  # one image of all rows
    headers: dict[str, str] | None = None  # on binary replies (the JSON body says it all)
    duration_ms: int = 80  # per GIF frame


@dataclass(frozen=True)
class Format:
    media_type: str
    post: PostFn  # in the inference thread: the outputs' rows -> one item per row
    render: Callable[[list, Reply], Awaitable[Response]]  # the items -> the reply
    description: str = ""  # for OpenAPI

    @property
    def binary(self) -> bool:
        """Not JSON: what made the images travels in headers (`Reply.headers`)."""
        return self.render is not _render_json


def json_response(data: dict) -> Response:
    """JSON built as dicts and dumped once by orjson (no response-model validation on the hot path)."""
    return Response(orjson.dumps(data), media_type="application/json")


def npy_bytes(images: np.ndarray) -> bytes:
    """uint8 [N, H, W] or [N, H, W, C] -> a `.npy` file (numpy's own writer, object arrays refused)."""
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.ascontiguousarray(images), allow_pickle=False)
    return buf.getvalue()


def _b64_png_rows(outputs: Outputs) -> list[str]:
    return imaging.png_b64_rows(outputs[0])


def _uint8_rows(outputs: Outputs) -> list:
    return list(imaging.to_uint8(outputs[0]))


def _npy_rows(outputs: Outputs) -> list:
    """uint8 rows in the `.npy` layout: [H, W] for one channel, else [H, W, C]."""
    u8 = imaging.to_uint8(outputs[0])
    return list(u8[..., 0] if u8.shape[3] == 1 else u8)


async def _render_json(items: list, reply: Reply) -> Response:
    return json_response(reply.json(items))


async def _render_png(items: list, reply: Reply) -> Response:
    encode = imaging.grid_png if reply.layout == "grid" else imaging.strip_png
    png = await run_in_threadpool(encode, np.stack(items))
    return Response(png, media_type="image/png", headers=reply.headers)


async def _render_gif(items: list, reply: Reply) -> Response:
    gif = await run_in_threadpool(imaging.gif_bytes, np.stack(items), reply.duration_ms)
    return Response(gif, media_type="image/gif", headers=reply.headers)


async def _render_npy(items: list, reply: Reply) -> Response:
    # n * h * w bytes (at most max_images rows): a copy of that costs microseconds
    return Response(npy_bytes(np.stack(items)), media_type=NPY, headers=reply.headers)


FORMATS: dict[str, Format] = {
    "json": Format("application/json", _b64_png_rows, _render_json, "the default"),
    "png": Format("image/png", _uint8_rows, _render_png, "one PNG: a grid (/generate) or a strip"),
    "gif": Format("image/gif", _uint8_rows, _render_gif, "an endlessly looping animation"),
    "npy": Format(
        NPY, _npy_rows, _render_npy, "one uint8 .npy array: (n, h, w) for one channel, else (n, h, w, c)"
    ),
}

_JSON_RANGES = frozenset({"application/json", "application/*", "*/*", "*"})
_ACCEPT_ECHO = 100  # characters of a refused Accept header quoted in the 406


@lru_cache(maxsize=256)  # clients send a handful of distinct Accept headers; bounded all the same
def _pick(accept: str, offered: tuple[str, ...]) -> str | None:
    """The name of the format for `accept` among `offered` (+ JSON), or None (406)."""
    ranges = {part.split(";", 1)[0].strip().lower() for part in accept.split(",")}
    ranges.discard("")
    if not ranges:
        return "json"
    for name in offered:
        if FORMATS[name].media_type in ranges:
            return name
    if ranges & _JSON_RANGES or any(r.endswith("/*") for r in ranges):
        return "json"
    return None


def negotiate(request: Request, offered: tuple[str, ...]) -> Format:
    """The first of `offered` (names in FORMATS) that `Accept` lists, else JSON if it allows
    JSON (or says nothing), else `NotAcceptable`."""
    accept = request.headers.get("accept", "")
    name = _pick(accept, offered)
    if name is None:
        media = ", ".join(FORMATS[n].media_type for n in ("json", *offered))
        shown = accept if len(accept) <= _ACCEPT_ECHO else accept[:_ACCEPT_ECHO] + "..."
        raise NotAcceptable(
            f"Accept: {shown!r} lists no format this endpoint produces ({media})", field="accept"
        )
    return FORMATS[name]


def openapi_responses(offered: tuple[str, ...], headers: dict[str, str] | None = None) -> dict:
    """A route's `responses=`: the binary media types it offers on 200 (JSON comes from its
    response_model), the headers its binary replies carry, and the 406."""
    content = {
        FORMATS[n].media_type: {
            "schema": {"type": "string", "format": "binary", "description": FORMATS[n].description}
        }
        for n in offered
    }
    ok: dict = {"content": content}
    if headers:
        ok["headers"] = {h: {"description": d, "schema": {"type": "string"}} for h, d in headers.items()}
    return {
        200: ok,
        406: {"model": ErrorBody, "description": "Accept lists no format this endpoint produces"},
    }
