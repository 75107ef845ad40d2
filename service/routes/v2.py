"""The Open Inference Protocol (KServe v2 REST, Triton's HTTP API) over the same batchers as /generate.

Any v2 client (`tritonclient.http`, KServe's SDKs, curl) talks to ganserve as it talks to Triton:

    GET  /v2                                          server metadata
    GET  /v2/health/live, /v2/health/ready            200, or 400 when not ready (empty bodies)
    GET  /v2/models/{name}[/versions/{v}]             versions, inputs and outputs (datatype, shape)
    GET  /v2/models/{name}[/versions/{v}]/ready       200, or 400 when not ready
    POST /v2/models/{name}[/versions/{v}]/infer       the generator: z [N, latent_dim] (and y
                                                      [N, num_classes]) FP32 -> image [N, C, H, W]
                                                      FP32 in [-1, 1]

Tensors travel as JSON (`data`, row-major, flat or nested) or with Triton's binary tensor data
extension: the JSON header first (its length in the `Inference-Header-Content-Length` header),
then each binary input's raw little-endian bytes in input order (`parameters.binary_data_size`).
The image comes back binary when the request asks (`parameters.binary_data_output`, or the
output's `binary_data`; tritonclient asks by default), else as JSON `data`.

Why here, not a second server: an infer request becomes one batcher entry of the model's
generator, exactly as /generate's rows do, so it shares the queue, the batches, the metrics, the
admission bound, the body-size limit, API keys and `max_images` rows per request. Everything is
checked against the model's signature (names, datatypes, shapes, byte counts) before any tensor
is decoded. Errors carry the protocol's body, `{"error": "<message>"}`, with the status of the one
status map (`plumbing.STATUS`), except bad input: 400 here, as the protocol says, not 422. (The
middleware's own refusals, 401/413/503, keep the service's body, whose `error` is a code.) Without
a version the newest served one answers, as on /generate; a version is the whole number of its
folder, `models/<name>/<version>/`. Content-Encoding (gzip) and shared memory are refused.
"""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
import orjson
from fastapi import APIRouter, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .. import __version__, metrics
from ..auth import request_id
from ..errors import InvalidInput, ServiceError, clip, limit_error
from ..plumbing import RETRY_AFTER, STATUS, body, error_responses, find_model, json_values, run_batched, state
from ..registry import Model, Registry

HEADER_LENGTH = "inference-header-content-length"
DATATYPES = {  # numpy dtype name (modelformat.signatures) -> the protocol's datatype
    "float32": "FP32",
    "float64": "FP64",
    "float16": "FP16",
    "int64": "INT64",
    "int32": "INT32",
    "uint8": "UINT8",
    "bool": "BOOL",
}
MAX_ABS = 1e4  # as the JSON API's latent coordinates (schemas.Coord): far outside N(0, 1) is an error
Name = Annotated[str, Path(max_length=64)]
Version = Annotated[str, Path(pattern=r"^[0-9]{1,18}$", description="a whole number (its folder)")]


class NotReady(ServiceError):
    """A model that is served but not (or no longer) running: 400, as the protocol says."""

    code = "not_ready"


class V2Error(BaseModel):
    error: str = Field(description="what went wrong (the service's own refusals: a code, with `detail`)")


ERRORS = error_responses(
    V2Error,
    {
        400: "invalid request: names the input, the field or the limit; or not ready",
        401: "no or a wrong API key",
        404: "unknown model or version",
        413: "body over the upload limit",
        503: "overloaded, shutting down or model unavailable (Retry-After)",
        504: "deadline passed while queued",
    },
)


# --- the protocol's request header (pydantic; unknown fields ignored, as Triton does) --------------


class _Part(BaseModel):
    model_config = ConfigDict(extra="ignore")


class InferInputTensor(_Part):
    name: str = Field(max_length=64)
    shape: list[int] = Field(max_length=8, description="[N, width]: N rows")
    datatype: str = Field(max_length=16, description="FP32")
    parameters: dict[str, Any] | None = Field(None, description="binary_data_size: bytes after the header")
    data: Any = Field(None, description="the values, row-major (flat or nested); absent when binary")


class InferOutputTensor(_Part):
    name: str = Field(max_length=64)
    parameters: dict[str, Any] | None = Field(None, description="binary_data: true for raw bytes")


class InferRequest(_Part):
    id: str | None = Field(None, max_length=256)
    parameters: dict[str, Any] | None = Field(None, description="binary_data_output: true for raw bytes")
    inputs: list[InferInputTensor] = Field(min_length=1, max_length=8)
    outputs: list[InferOutputTensor] | None = Field(None, max_length=8)


# --- errors: the protocol's body, from the one status map -----------------------------------------


def v2_error(exc: ServiceError, rid: str, retry_after_s: int) -> Response:
    status = (
        400
        if isinstance(exc, InvalidInput | NotReady)
        else next((s for t, s in STATUS.items() if isinstance(exc, t)), 500)
    )
    headers = {"X-Request-ID": rid}
    if isinstance(exc, RETRY_AFTER):
        headers["Retry-After"] = str(retry_after_s)
    return Response(orjson.dumps({"error": exc.detail}), status, headers, media_type="application/json")


class V2Route(APIRoute):
    """Every route of this module answers errors in the protocol's body."""

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def v2_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except ServiceError as exc:
                return v2_error(exc, request_id(request.scope), request.app.state.settings.retry_after_s)
            except RequestValidationError as exc:
                first = next(iter(exc.errors()), {})
                where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("path", "query"))
                error = InvalidInput(f"{where}: {first.get('msg', 'invalid')}", field=where or None)
                return v2_error(error, request_id(request.scope), 0)

        return v2_handler


router = APIRouter(prefix="/v2", tags=["v2 (Open Inference Protocol)"], route_class=V2Route)


# --- health and metadata ------------------------------------------------------------------------


def _model(request: Request, name: str, version: str | None) -> Model:
    """The model of the URL: /v2/models/{name} (newest version) or .../versions/{version}."""
    registry: Registry = request.app.state.registry
    return find_model(registry, name, version)


def _ready(request: Request) -> bool:
    registry, _ = state(request)
    return registry.ready and not getattr(request.app.state, "draining", False)


def _tensor(spec) -> dict:
    return {"name": spec.name, "datatype": DATATYPES.get(spec.dtype, spec.dtype), "shape": list(spec.shape)}


EMPTY = {"content": None}  # the protocol's health replies have no body


@router.get("", responses={200: {"description": "name, version, extensions"}})
async def server_metadata():
    return Response(
        orjson.dumps({"name": "ganserve", "version": __version__, "extensions": ["binary_tensor_data"]}),
        media_type="application/json",
    )


@router.get("/health/live", response_class=Response, responses={200: {"description": "alive", **EMPTY}})
async def live():
    return Response(status_code=200)


@router.get(
    "/health/ready",
    response_class=Response,
    responses={200: {"description": "ready", **EMPTY}, 400: {"description": "not ready", **EMPTY}},
)
async def ready(request: Request):
    return Response(status_code=200 if _ready(request) else 400)


def _metadata(request: Request, name: str, version: str | None) -> Response:
    """The generator's tensors (batch axis -1) and the served versions, oldest first."""
    model = _model(request, name, version)
    registry, _ = state(request)
    sig = model.signatures["generator"]
    meta = {
        "name": model.name,
        "versions": list(registry.versions[model.name]),
        "platform": "onnxruntime_onnx",
        "inputs": [_tensor(t) for t in sig.inputs],
        "outputs": [_tensor(t) for t in sig.outputs if t.name == "image"],
    }
    return Response(orjson.dumps(meta), media_type="application/json")


@router.get("/models/{name}", responses=ERRORS)
async def model_metadata(request: Request, name: Name):
    return _metadata(request, name, None)


@router.get("/models/{name}/versions/{version}", responses=ERRORS)
async def model_version_metadata(request: Request, name: Name, version: Version):
    return _metadata(request, name, version)


def _model_ready(request: Request, name: str, version: str | None) -> Response:
    model = _model(request, name, version)
    if not model.started or getattr(request.app.state, "draining", False):
        raise NotReady(f"model {model.key} is not ready")
    return Response(status_code=200)


READY = {200: {"description": "ready", **EMPTY}} | ERRORS


@router.get("/models/{name}/ready", response_class=Response, responses=READY)
async def model_ready(request: Request, name: Name):
    return _model_ready(request, name, None)


@router.get("/models/{name}/versions/{version}/ready", response_class=Response, responses=READY)
async def model_version_ready(request: Request, name: Name, version: Version):
    return _model_ready(request, name, version)


# --- infer --------------------------------------------------------------------------------------


def _split(request: Request, raw: bytes) -> tuple[bytes, bytes]:
    """(the JSON header, the binary tensor data after it)."""
    given = request.headers.get(HEADER_LENGTH)
    if given is None:
        return raw, b""
    if not given.isdigit() or not 0 < int(given) <= len(raw):
        raise InvalidInput(
            f"Inference-Header-Content-Length: {clip(given, 20)} is not a length within the body's "
            f"{len(raw)} bytes",
            field="Inference-Header-Content-Length",
        )
    n = int(given)
    return raw[:n], raw[n:]


def _header(raw: bytes, max_values: int) -> InferRequest:
    values = json_values(raw)  # before parsing: no body builds a larger tree than a request needs
    if values > max_values:
        raise InvalidInput(f"body: about {values} JSON values, more than the {max_values} a request needs")
    try:
        return InferRequest.model_validate(orjson.loads(raw), strict=True)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"body: the inference header is not JSON ({exc})", field="body") from None
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidInput(f"{where}: {first['msg']}", field=where) from None


def _binary_size(t: InferInputTensor) -> int | None:
    size = (t.parameters or {}).get("binary_data_size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
        raise InvalidInput(f"{t.name}: binary_data_size must be a byte count", field=t.name)
    return size


def _inputs(req: InferRequest, blob: bytes, model: Model, max_rows: int) -> dict[str, np.ndarray]:
    """The feeds, checked against the generator's signature before any tensor is decoded."""
    specs = {t.name: t for t in model.signatures["generator"].inputs}
    names = [t.name for t in req.inputs]
    if sorted(names) != sorted(specs):
        raise InvalidInput(
            f"inputs: {names}; model {model.name!r} takes exactly {sorted(specs)}", field="inputs"
        )
    rows = {t.shape[0] for t in req.inputs if t.shape}
    for t in req.inputs:
        spec = specs[t.name]
        want = DATATYPES[spec.dtype]
        if t.datatype != want:
            raise InvalidInput(f"{t.name}: datatype {t.datatype[:16]}; the model takes {want}", field=t.name)
        if len(t.shape) != 2 or t.shape[1] != spec.shape[1] or len(rows) != 1 or t.shape[0] < 1:
            raise InvalidInput(
                f"{t.name}: shape {t.shape}; the model takes [N, {spec.shape[1]}] with one N >= 1 for "
                f"every input",
                field=t.name,
            )
    (n,) = rows
    if n > max_rows:
        raise limit_error("shape[0]", max_rows, n, "rows")
    feeds, offset = {}, 0
    for t in req.inputs:
        count = n * t.shape[1]
        size = _binary_size(t)
        if size is not None:
            if size != 4 * count or offset + size > len(blob):
                raise InvalidInput(
                    f"{t.name}: binary_data_size {size}; shape {t.shape} in FP32 is {4 * count} bytes "
                    f"({len(blob) - offset} left in the body)",
                    field=t.name,
                )
            array = np.frombuffer(blob, "<f4", count, offset)
            offset += size
        else:
            if t.data is None:
                raise InvalidInput(f"{t.name}: no data and no binary_data_size", field=t.name)
            try:
                array = np.asarray(t.data)
            except ValueError:
                raise InvalidInput(
                    f"{t.name}: data is not a regular array of numbers", field=t.name
                ) from None
            if array.dtype.kind not in "iuf" or array.size != count:
                raise InvalidInput(
                    f"{t.name}: data holds {array.size} values of kind {array.dtype.kind!r}; shape "
                    f"{t.shape} needs {count} numbers",
                    field=t.name,
                )
            array = array.astype(np.float32)
        array = array.reshape(n, t.shape[1])
        if not np.isfinite(array).all() or np.abs(array).max() > MAX_ABS:
            raise InvalidInput(f"{t.name}: values must be finite and within +-{MAX_ABS:g}", field=t.name)
        feeds[t.name] = array
    if offset != len(blob):
        raise InvalidInput(
            f"body: {len(blob) - offset} bytes after the tensors that binary_data_size accounts for",
            field="body",
        )
    return feeds


def _binary_output(req: InferRequest) -> bool:
    """Whether the image goes back as raw bytes; refuses what ganserve does not offer."""
    binary = (req.parameters or {}).get("binary_data_output") is True
    for out in req.outputs or ():
        if out.name != "image":
            raise InvalidInput(
                f"outputs: {clip(out.name, 64)}; the generator's output is 'image'", field="outputs"
            )
        params = out.parameters or {}
        unsupported = sorted(k for k in params if k.startswith("shared_memory") or k == "classification")
        if unsupported:
            raise InvalidInput(f"outputs: {unsupported} not supported by ganserve", field="outputs")
        binary = params["binary_data"] is True if "binary_data" in params else binary
    return binary


INFER_BODY = {"application/octet-stream": {"type": "string", "format": "binary"}}


@router.post("/models/{name}/infer", responses=ERRORS)
@body(InferRequest, INFER_BODY)
async def infer(request: Request, name: Name):
    """z (and y) -> image through the generator's batcher, JSON or binary tensors both ways."""
    return await _infer(request, name, None)


@router.post("/models/{name}/versions/{version}/infer", responses=ERRORS)
@body(InferRequest, INFER_BODY)
async def infer_version(request: Request, name: Name, version: Version):
    return await _infer(request, name, version)


async def _infer(request: Request, name: str, version: str | None) -> Response:
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding != "identity":
        raise InvalidInput(
            f"Content-Encoding: {clip(encoding, 20)}; send the body uncompressed", field="Content-Encoding"
        )
    model = _model(request, name, version)
    _, st = state(request)
    raw = await request.body()  # bounded by the middleware's max_upload_bytes
    header, blob = _split(request, raw)
    widths = sum(t.shape[1] for t in model.signatures["generator"].inputs)
    req = _header(header, st.max_images * widths + 1024)
    binary = _binary_output(req)
    feeds = _inputs(req, blob, model, st.max_images)
    rows = await run_batched(request, model.generator, feeds)
    metrics.IMAGES_GENERATED.labels(model.name, model.version).inc(len(rows))
    image = np.stack(rows).astype("<f4", copy=False)
    out: dict[str, Any] = {"name": "image", "datatype": "FP32", "shape": list(image.shape)}
    reply: dict[str, Any] = {"model_name": model.name, "model_version": model.version, "outputs": [out]}
    if req.id is not None:
        reply["id"] = req.id
    if not binary:
        out["data"] = image.ravel()
        return Response(orjson.dumps(reply, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")
    data = image.tobytes()
    out["parameters"] = {"binary_data_size": len(data)}
    head = orjson.dumps(reply)
    return Response(
        head + data,
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(len(head))},
    )
