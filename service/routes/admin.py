"""POST /admin/reload: load new model versions and retire removed ones, without a restart.

The same as SIGHUP (`service.app`): `Registry.reload` discovers the model directory again; new
versions serve as soon as they are warm (the newest is the default at once), versions whose
folder is gone stop being served and drain, and a folder that fails to load changes nothing.

Why refused without API keys: it makes the process read and load files on request, so it exists
only where requests are authenticated (403 while `GANSERVE_API_KEYS` is empty). The key is checked
here as well as by the auth middleware, so listing the path in `GANSERVE_OPEN_PATHS` cannot open
it. With several workers (`GANSERVE_WORKERS` > 1) a request reaches one worker only, so it is
refused (409): send SIGHUP to the server's main process, and uvicorn replaces each worker in turn.
"""

from __future__ import annotations

import dataclasses

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from ..auth import key_ok, presented_key, request_id
from ..errors import ShuttingDown
from ..formats import json_response
from ..plumbing import ERRORS, body, error_body, error_reply, parse, state
from ..schemas import ErrorBody

REFUSALS = {
    401: "no or a wrong API key",
    403: "no API keys are configured (GANSERVE_API_KEYS): use SIGHUP",
    409: "several workers: send SIGHUP to the main process",
}
router = APIRouter(
    tags=["admin"],
    responses=ERRORS | {s: {"model": ErrorBody, "description": d} for s, d in REFUSALS.items()},
)


class ReloadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    wait: bool = Field(
        True,
        description="reply after the replaced and retired versions drained (false: once the new ones serve)",
    )


class ReloadResponse(BaseModel):
    loaded: list[str] = Field(description="name@version now served")
    replaced: list[str] = Field(description="served before; their model.json changed, reloaded")
    retired: list[str] = Field(description="their folder is gone: no longer served, drained")
    failed: dict[str, str] = Field(
        description="name@version -> why it did not load (what served before serves on)"
    )
    unchanged: list[str]


def _refuse(request: Request, status: int, code: str, detail: str):
    return error_reply(status, error_body(code, detail, request_id(request.scope)))


@router.post("/admin/reload", response_model=ReloadResponse)
@body(ReloadRequest)
async def reload(request: Request):
    """Reload the model directory: new versions in, removed versions out, no request failed."""
    registry, st = state(request)
    keys = [k.encode() for k in st.api_key_list]
    if not keys:
        return _refuse(
            request, 403, "forbidden", "POST /admin/reload needs API keys (GANSERVE_API_KEYS); use SIGHUP"
        )
    if not key_ok(presented_key(request.scope), keys):
        return _refuse(
            request, 401, "unauthorized", "an API key is required (Authorization: Bearer or X-API-Key)"
        )
    if st.workers > 1:
        return _refuse(
            request,
            409,
            "conflict",
            f"{st.workers} workers: a request reaches one; send SIGHUP to the main process",
        )
    if getattr(request.app.state, "draining", False):
        raise ShuttingDown("the service is shutting down")
    wait = (await parse(request, ReloadRequest)).wait if await request.body() else True
    report = await registry.reload(st.drain_timeout_s, wait=wait)
    return json_response(dataclasses.asdict(report))
