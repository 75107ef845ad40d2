"""Reply formats: one table, one negotiation, so a new format is one entry in `FORMATS`.

A format is decided once per request, before the batch: its `post` hook runs per entry in the
inference thread (PNG encoding never blocks the event loop), and its `render` turns the rows
into the reply after the batch. A route says which formats it offers besides JSON, in order;
`negotiate` picks the first whose media type appears in `Accept` (a plain substring test, as
browsers and curl send it), else JSON. So `*/*` and `image/*` get JSON, and so does a format the
route does not offer (`Accept: image/gif` on /generate).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from fastapi import Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from . import imaging
from .batcher import Outputs, PostFn


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


def json_response(data: dict) -> Response:
    """JSON built as dicts and dumped once (no response-model validation on the hot path)."""
    return Response(json.dumps(data, separators=(",", ":")).encode(), media_type="application/json")


def _b64_png_rows(outputs: Outputs) -> list[str]:
    return imaging.png_b64_rows(outputs[0])


def _uint8_rows(outputs: Outputs) -> list:
    return list(imaging.to_uint8(outputs[0]))


async def _render_json(items: list, reply: Reply) -> Response:
    return json_response(reply.json(items))


async def _render_png(items: list, reply: Reply) -> Response:
    encode = imaging.grid_png if reply.layout == "grid" else imaging.strip_png
    png = await run_in_threadpool(encode, np.stack(items))
    return Response(png, media_type="image/png", headers=reply.headers)


async def _render_gif(items: list, reply: Reply) -> Response:
    gif = await run_in_threadpool(imaging.gif_bytes, np.stack(items), reply.duration_ms)
    return Response(gif, media_type="image/gif", headers=reply.headers)


FORMATS: dict[str, Format] = {
    "json": Format("application/json", _b64_png_rows, _render_json),  # the default
    "png": Format("image/png", _uint8_rows, _render_png),  # one grid or strip
    "gif": Format("image/gif", _uint8_rows, _render_gif),  # an animation
}


def negotiate(request: Request, allowed: tuple[str, ...]) -> Format:
    """The first of `allowed` (names in FORMATS) whose media type `Accept` names, else JSON."""
    accept = request.headers.get("accept", "")
    for name in allowed:
        if FORMATS[name].media_type in accept:
            return FORMATS[name]
    return FORMATS["json"]
