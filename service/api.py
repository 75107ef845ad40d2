"""Thin HTTP handlers: validate against the limits, call latent/batcher/imaging, shape the reply.

Why thin: the work lives in modules without HTTP (latent, batcher, imaging, scoring); handlers
only translate. `error_response` is the one place where domain errors become HTTP statuses.
Hot path notes: JSON replies are built as dicts and dumped once (no response-model validation);
PNG encoding runs in the inference thread (the batcher's `post`), never on the event loop.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from typing import Any

import numpy as np
from fastapi import APIRouter, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from . import imaging, latent, metrics, scoring
from .batcher import Batcher
from .errors import (
    ClientGone,
    DeadlineExceeded,
    InferenceFailed,
    InvalidInput,
    ModelNotFound,
    ModelUnavailable,
    Overloaded,
    PayloadTooLarge,
    ServiceError,
    ShuttingDown,
    limit_error,
)
from .registry import Model, Registry, valid_name
from .schemas import (
    MAX_SEED,
    ArithmeticRequest,
    ArithmeticResponse,
    BatcherInfo,
    ErrorBody,
    GenerateRequest,
    GenerateResponse,
    Health,
    InterpolateRequest,
    InterpolateResponse,
    ModelInfo,
    ModelList,
    Readiness,
    ScoreRequest,
    ScoreResponse,
)
from .settings import Settings

# --- the one translation point: domain error -> HTTP status ----------------------------------

STATUS: dict[type[ServiceError], int] = {
    InvalidInput: 422,
    PayloadTooLarge: 413,
    ModelNotFound: 404,
    ModelUnavailable: 503,
    Overloaded: 503,
    ShuttingDown: 503,
    DeadlineExceeded: 504,
    ClientGone: 499,
    InferenceFailed: 500,
}
RETRY_AFTER = (Overloaded, ShuttingDown, ModelUnavailable)


def error_response(exc: ServiceError, retry_after_s: int = 1) -> JSONResponse:
    status = next((s for t, s in STATUS.items() if isinstance(exc, t)), 500)
    body = {"error": exc.code, "detail": exc.detail, "field": exc.field, "limit": exc.limit}
    headers = {"Retry-After": str(retry_after_s)} if isinstance(exc, RETRY_AFTER) else None
    return JSONResponse(body, status_code=status, headers=headers)


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
    return out or "body"


def validation_response(errors: list[dict]) -> JSONResponse:
    """pydantic/FastAPI validation errors -> 422 with the first offending field named."""
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    field = _loc(first.get("loc", ()))
    detail = "; ".join(f"{_loc(e.get('loc', ()))}: {e.get('msg')}" for e in errors[:5])
    limit = (first.get("ctx") or {}).get("le") or (first.get("ctx") or {}).get("max_length")
    limit = limit if isinstance(limit, int | float) and not isinstance(limit, bool) else None
    return JSONResponse(
        {"error": "invalid_input", "detail": detail, "field": field, "limit": limit}, status_code=422
    )


def install_error_handlers(app) -> None:
    retry = app.state.settings.retry_after_s

    async def on_service_error(request: Request, exc: ServiceError):
        return error_response(exc, retry)

    async def on_validation(request: Request, exc: RequestValidationError):
        return validation_response(list(exc.errors()))

    async def on_http(request: Request, exc: HTTPException):
        codes = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}
        return JSONResponse(
            {
                "error": codes.get(exc.status_code, "http_error"),
                "detail": str(exc.detail),
                "field": None,
                "limit": None,
            },
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    app.add_exception_handler(ServiceError, on_service_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(HTTPException, on_http)


ERRORS: dict[int | str, dict[str, Any]] = {
    s: {"model": ErrorBody, "description": d}
    for s, d in {
        404: "unknown model",
        413: "body over the upload limit",
        422: "invalid input or a limit exceeded",
        503: "overloaded, shutting down or model unavailable (Retry-After)",
        504: "deadline passed while queued",
    }.items()
}

router = APIRouter()


# --- helpers ----------------------------------------------------------------------------------


def _state(request: Request) -> tuple[Registry, Settings]:
    st = request.app.state
    return st.registry, st.settings


def _model(registry: Registry, name: str | None) -> Model:
    if name is not None and not valid_name(name):
        raise InvalidInput(f"model: {name!r} is not a valid model name", field="model")
    return registry.get(name)


def _wants(request: Request, mime: str) -> bool:
    return mime in request.headers.get("accept", "")


async def _watch_disconnect(receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def run_batched(request: Request, batcher: Batcher, feeds: dict[str, np.ndarray], post=None) -> list:
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


def _check_labels(model: Model, labels, n: int, field: str = "labels") -> list[int] | None:
    if labels is None:
        return None
    if not model.conditional:
        raise InvalidInput(f"{field}: model {model.name!r} is unconditional and takes no labels", field=field)
    labels = [labels] * n if isinstance(labels, int) else list(labels)
    if len(labels) != n:
        raise InvalidInput(
            f"{field}: {len(labels)} labels for {n} images (give one, or one per image)", field=field
        )
    _check_label_range(model.num_classes, labels, field)
    return labels


def _check_label_range(k: int, labels, field: str) -> None:
    for i, lab in enumerate(labels):
        if lab >= k:
            raise InvalidInput(
                f"{field}[{i}]: label {lab} is out of range 0..{k - 1}", field=field, limit=k - 1
            )


def _check_latent(model: Model, z, field: str) -> np.ndarray:
    if len(z) != model.latent_dim:
        raise InvalidInput(
            f"{field}: length {len(z)}, the model's latent_dim is {model.latent_dim}",
            field=field,
            limit=model.latent_dim,
        )
    return np.asarray(z, np.float32)


def _feeds(model: Model, z: np.ndarray, y: np.ndarray | None) -> dict[str, np.ndarray]:
    return {"z": z, "y": y} if model.conditional else {"z": z}


def _random_seed(room: int = 0) -> int:
    return secrets.randbelow(MAX_SEED - room)


def _json(data: dict) -> Response:
    return Response(json.dumps(data, separators=(",", ":")).encode(), media_type="application/json")


def _uint8_rows(outputs) -> list:
    return list(imaging.to_uint8(outputs[0]))


def _png_response(data: bytes, mime: str = "image/png", headers: dict | None = None) -> Response:
    return Response(data, media_type=mime, headers=headers)


def _json_body(model: type) -> dict:
    """OpenAPI for a handler that parses its JSON body itself (see `_parse`)."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}},
        }
    }


BODY_MODELS = (GenerateRequest, InterpolateRequest, ArithmeticRequest)


def add_body_schemas(openapi: dict) -> dict:
    """Put the self-parsed request models (and their nested models) into components.schemas."""
    comps = openapi.setdefault("components", {}).setdefault("schemas", {})
    for model in BODY_MODELS:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, sub in schema.pop("$defs", {}).items():
            comps.setdefault(name, sub)
        comps.setdefault(model.__name__, schema)
    return openapi


async def _parse(request: Request, model: type):
    """Raw bytes -> pydantic in one step (`model_validate_json`): cheaper than FastAPI's body
    handling (json.loads, then validation, then dependency solving) on the hot path. Strict: a
    string or a boolean where the schema says integer is a 422, not silently coerced (fuzzing)."""
    try:
        return model.model_validate_json(await request.body(), strict=True)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from None


# --- endpoints --------------------------------------------------------------------------------


@router.post(
    "/generate",
    response_model=GenerateResponse,
    responses=ERRORS,
    tags=["generate"],
    openapi_extra=_json_body(GenerateRequest),
)
async def generate(request: Request):
    """Sample images. Image i uses seed `seed + i` (or `seeds[i]`); `Accept: image/png` gives a grid."""
    body = await _parse(request, GenerateRequest)
    registry, st = _state(request)
    model = _model(registry, body.model)
    base = None
    if body.seeds is not None:
        if len(body.seeds) > st.max_images:
            raise limit_error("seeds", st.max_images, len(body.seeds), "seeds")
        seeds = body.seeds
    else:
        n = body.n or (len(body.labels) if isinstance(body.labels, list) else 1)
        if n > st.max_images:
            raise limit_error("n", st.max_images, n, "images")
        base = body.seed if body.seed is not None else _random_seed(st.max_images)
        if base + n - 1 > MAX_SEED:
            raise InvalidInput(f"seed: seed + n - 1 must stay below 2**63 (seed {base}, n {n})", field="seed")
        seeds = range(base, base + n)
    n = len(seeds)
    labels = _check_labels(model, body.labels, n)
    k = model.num_classes
    if n > 16:
        z, drawn = await run_in_threadpool(
            latent.latents_for_seeds, seeds, model.latent_dim, k, body.truncation
        )
    else:
        z, drawn = latent.latents_for_seeds(seeds, model.latent_dim, k, body.truncation)
    labels = labels if labels is not None else drawn
    y = latent.one_hot(labels, k) if model.conditional else None
    as_png = _wants(request, "image/png")
    items = await run_batched(
        request, model.generator, _feeds(model, z, y), _uint8_rows if as_png else _b64_rows
    )
    metrics.IMAGES_GENERATED.labels(model.name).inc(n)
    if as_png:
        png = await run_in_threadpool(imaging.grid_png, np.stack(items))
        return _png_response(png, headers={"X-Seed": str(base if base is not None else seeds[0])})
    images = []
    for i, s in enumerate(seeds):
        img = {"seed": s, "label": labels[i] if labels is not None else None, "image": items[i]}
        if body.return_latents:
            img["latent"] = z[i].tolist()
        images.append(img)
    return _json({"model": model.name, "seed": base, "images": images})


def _b64_rows(outputs) -> list[str]:
    return imaging.png_b64_rows(outputs[0])


@router.post(
    "/interpolate",
    response_model=InterpolateResponse,
    responses=ERRORS,
    tags=["generate"],
    openapi_extra=_json_body(InterpolateRequest),
)
async def interpolate(request: Request):
    """Walk through keyframes (seeds or latents); `Accept: image/png` a strip, `image/gif` an animation."""
    body = await _parse(request, InterpolateRequest)
    registry, st = _state(request)
    model = _model(registry, body.model)
    kf = body.keyframes
    if len(kf) > st.max_keyframes:
        raise limit_error("keyframes", st.max_keyframes, len(kf), "keyframes")
    if body.steps > st.max_steps:
        raise limit_error("steps", st.max_steps, body.steps, "steps")
    frames = (len(kf) - 1) * body.steps + 1
    if frames > st.max_images:
        raise InvalidInput(
            f"steps: {len(kf) - 1} segments x {body.steps} steps + 1 = {frames} frames exceeds the limit of "
            f"{st.max_images} images",
            field="steps",
            limit=st.max_images,
        )
    points, labels = [], []
    for i, f in enumerate(kf):
        if f.seed is not None:
            z, drawn = latent.seeded(f.seed, model.latent_dim, model.num_classes, body.truncation)
        else:
            z, drawn = _check_latent(model, f.latent, f"keyframes[{i}].latent"), None
        if model.conditional:
            label = f.label if f.label is not None else drawn
            if label is None:
                raise InvalidInput(
                    f"keyframes[{i}].label: required for a latent keyframe of a conditional model",
                    field=f"keyframes[{i}].label",
                )
            _check_label_range(model.num_classes, [label], f"keyframes[{i}].label")
            labels.append(label)
        elif f.label is not None:
            raise InvalidInput(
                f"keyframes[{i}].label: model {model.name!r} is unconditional", field=f"keyframes[{i}].label"
            )
        points.append(z)
    y_key = latent.one_hot(labels, model.num_classes) if model.conditional else None
    zs, ys, ts = latent.walk(np.stack(points), body.steps, body.method, y_key)
    as_gif, as_png = _wants(request, "image/gif"), _wants(request, "image/png")
    post = _uint8_rows if (as_gif or as_png) else _b64_rows
    items = await run_batched(request, model.generator, _feeds(model, zs, ys), post)
    metrics.IMAGES_GENERATED.labels(model.name).inc(len(items))
    if as_gif:
        return _png_response(
            await run_in_threadpool(imaging.gif_bytes, np.stack(items), body.duration_ms), mime="image/gif"
        )
    if as_png:
        return _png_response(await run_in_threadpool(imaging.strip_png, np.stack(items)))
    out = []
    for i, img in enumerate(items):
        frame = {
            "index": i,
            "t": float(ts[i]),
            "label": ys[i].tolist() if ys is not None else None,
            "image": img,
        }
        if body.return_latents:
            frame["latent"] = zs[i].tolist()
        out.append(frame)
    return _json({"model": model.name, "method": body.method, "frames": out})


@router.post(
    "/arithmetic",
    response_model=ArithmeticResponse,
    responses=ERRORS,
    tags=["generate"],
    openapi_extra=_json_body(ArithmeticRequest),
)
async def arithmetic(request: Request):
    """sum_i weight_i * mean(latents of term i), plus `neighbors` noisy variants (DCGAN fig. 7)."""
    body = await _parse(request, ArithmeticRequest)
    registry, st = _state(request)
    model = _model(registry, body.model)
    if len(body.terms) > st.max_terms:
        raise limit_error("terms", st.max_terms, len(body.terms), "terms")
    if body.neighbors + 1 > st.max_images:
        raise limit_error("neighbors", st.max_images - 1, body.neighbors, "neighbours")
    groups, weights, first_label = [], [], None
    for i, term in enumerate(body.terms):
        src = term.seeds if term.seeds is not None else term.latents
        name = "seeds" if term.seeds is not None else "latents"
        if len(src) > st.max_group_size:
            raise limit_error(f"terms[{i}].{name}", st.max_group_size, len(src), name)
        if term.seeds is not None:
            z, drawn = latent.latents_for_seeds(term.seeds, model.latent_dim, model.num_classes)
            if first_label is None and drawn:
                first_label = drawn[0]
        else:
            z = np.stack(
                [_check_latent(model, v, f"terms[{i}].latents[{j}]") for j, v in enumerate(term.latents)]
            )
        groups.append(z)
        weights.append(term.weight)
    result = latent.combine(groups, weights)
    label = None
    if model.conditional:
        label = body.label if body.label is not None else (first_label or 0)
        _check_label_range(model.num_classes, [label], "label")
    elif body.label is not None:
        raise InvalidInput(f"label: model {model.name!r} is unconditional", field="label")
    seed = None
    zs = result[None, :]
    if body.neighbors:
        seed = body.seed if body.seed is not None else _random_seed()
        zs = np.concatenate([zs, latent.neighbours(result, body.neighbors, body.noise_scale, seed)])
    y = latent.one_hot([label] * len(zs), model.num_classes) if model.conditional else None
    as_png = _wants(request, "image/png")
    items = await run_batched(
        request, model.generator, _feeds(model, zs, y), _uint8_rows if as_png else _b64_rows
    )
    metrics.IMAGES_GENERATED.labels(model.name).inc(len(items))
    if as_png:
        return _png_response(await run_in_threadpool(imaging.strip_png, np.stack(items)))
    pairs = [{"image": img, "latent": zs[i].tolist()} for i, img in enumerate(items)]
    return _json(
        {"model": model.name, "label": label, "seed": seed, "result": pairs[0], "neighbors": pairs[1:]}
    )


_SCORE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": ScoreRequest.model_json_schema()},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["images"],
                    "properties": {
                        "images": {"type": "array", "items": {"type": "string", "format": "binary"}},
                        "model": {"type": "string"},
                        "labels": {"type": "string", "description": "comma-separated labels, one per image"},
                    },
                }
            },
        },
    }
}


async def _score_input(request: Request, st: Settings) -> tuple[str | None, list[bytes], list[int] | None]:
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data"):
        try:
            form = await request.form(
                max_files=st.max_images, max_fields=16, max_part_size=st.max_upload_bytes
            )
        except HTTPException as exc:  # malformed multipart or too many parts: a client error
            if exc.status_code != 400:
                raise
            raise InvalidInput(f"body: {exc.detail}", field="body") from None
        files = form.getlist("images")
        if not files:
            raise InvalidInput("images: at least one file is required", field="images")
        if len(files) > st.max_images:
            raise limit_error("images", st.max_images, len(files), "images")
        blobs = []
        for f in files:
            blobs.append(await f.read() if hasattr(f, "read") else str(f).encode())
        model = form.get("model")
        raw = form.get("labels")
        labels = None
        if raw:
            try:
                labels = [int(x) for x in str(raw).replace(" ", "").split(",") if x]
            except ValueError:
                raise InvalidInput("labels: comma-separated integers expected", field="labels") from None
            if any(x < 0 for x in labels):
                raise InvalidInput("labels: labels are non-negative", field="labels")
        return (str(model) if model else None), blobs, labels
    try:
        req = ScoreRequest.model_validate_json(await request.body(), strict=True)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from None
    if len(req.images) > st.max_images:
        raise limit_error("images", st.max_images, len(req.images), "images")
    blobs = [imaging.b64decode(s, f"images[{i}]") for i, s in enumerate(req.images)]
    return req.model, blobs, req.labels


def _decode_all(blobs: list[bytes], shape, max_pixels: int) -> np.ndarray:
    return np.stack([imaging.decode_png(b, f"images[{i}]", shape, max_pixels) for i, b in enumerate(blobs)])


def _classifier_rows(outputs) -> list:
    return list(zip(outputs[0], outputs[1], strict=True))


@router.post(
    "/score", response_model=ScoreResponse, responses=ERRORS, tags=["score"], openapi_extra=_SCORE_BODY
)
async def score(request: Request):
    """Realness (discriminator), classifier label and confidence per image; IS and FID for the set.

    Body: JSON `{"images": [base64 PNG, ...], "labels": [...], "model": ...}` or multipart/form-data
    with `images` files (and optional `model`, comma-separated `labels`).
    """
    registry, st = _state(request)
    name, blobs, labels = await _score_input(request, st)
    model = _model(registry, name)
    n = len(blobs)
    if labels is not None:
        if len(labels) != n:
            raise InvalidInput(f"labels: {len(labels)} labels for {n} images", field="labels")
        _check_label_range(len(model.class_names), labels, "labels")
    x = await run_in_threadpool(_decode_all, blobs, model.image_shape, st.max_image_pixels)
    scores: list[dict] = [
        {"realness": None, "label": None, "label_name": None, "confidence": None} for _ in range(n)
    ]
    out: dict[str, Any] = {"n": n}
    warnings = []
    predicted = None
    if model.classifier is not None:
        rows = await run_batched(request, model.classifier, {"image": x}, _classifier_rows)
        logits = np.stack([r[0] for r in rows])
        feats = np.stack([r[1] for r in rows])
        probs = scoring.softmax(logits)
        predicted = probs.argmax(axis=1)
        for i in range(n):
            lab = int(predicted[i])
            scores[i].update(label=lab, label_name=model.class_names[lab], confidence=float(probs[i, lab]))
        out["inception_score"] = scoring.inception_score(probs)
        if labels is not None:
            out["label_accuracy"] = float(np.mean(predicted == np.asarray(labels)))
        if model.reference is not None:
            out["reference_n"] = int(model.reference["n"])
            if n >= 2:
                mu, sigma = scoring.feature_stats(feats)
                out["fid"] = scoring.frechet_distance(
                    mu, sigma, model.reference["mu"], model.reference["sigma"]
                )
            w = scoring.fid_warning(n)
            if w:
                warnings.append(w)
        else:
            warnings.append("no reference_stats.npz: FID unavailable")
    else:
        warnings.append("no classifier.onnx: labels, IS and FID unavailable")
    if model.discriminator is not None:
        feeds = {"image": x}
        if model.conditional:
            given = labels if labels is not None else (predicted.tolist() if predicted is not None else None)
            if given is not None and max(given) >= model.num_classes:
                raise InvalidInput(f"labels: out of range 0..{model.num_classes - 1}", field="labels")
            y = (
                latent.one_hot(given, model.num_classes)
                if given is not None
                else np.full((n, model.num_classes), 1.0 / model.num_classes, np.float32)
            )
            feeds["y"] = y
        logits = np.asarray(await run_batched(request, model.discriminator, feeds), np.float64)
        for i, p in enumerate(scoring.sigmoid(logits)):
            scores[i]["realness"] = float(p)
    else:
        warnings.append("no discriminator.onnx: realness unavailable")
    out["warning"] = "; ".join(warnings) or None
    return _json({"model": model.name, "scores": scores, "set": out})


# --- models and health ------------------------------------------------------------------------


def _info(registry: Registry, name: str, full: bool) -> dict:
    st = registry.settings
    if name in registry.failed:
        return {"name": name, "status": "failed", "error": registry.failed[name]}
    m = registry.models[name]
    c = m.card
    caps = ["generate", "interpolate", "arithmetic"]
    if m.discriminator is not None or m.classifier is not None:
        caps.append("score")
    info = {
        "name": name,
        "status": "ready",
        "kind": m.kind,
        "version": c.get("version"),
        "latent_dim": m.latent_dim,
        "num_classes": m.num_classes,
        "class_names": m.class_names,
        "image_shape": list(m.image_shape),
        "provider": m.provider,
        "capabilities": caps,
        "batcher": BatcherInfo(
            max_batch_size=st.max_batch_size,
            max_queue_delay_ms=st.max_queue_delay_ms,
            max_queue_rows=st.max_queue_rows,
            inference_threads=st.inference_threads,
        ).model_dump(),
    }
    if full:
        info["card"] = c
    return info


@router.get("/models", response_model=ModelList, tags=["models"])
async def list_models(request: Request):
    registry, _ = _state(request)
    names = sorted(set(registry.models) | set(registry.failed))
    return _json({"default": registry.default_name, "models": [_info(registry, n, False) for n in names]})


@router.get("/models/{name}", response_model=ModelInfo, responses=ERRORS, tags=["models"])
async def get_model(request: Request, name: str = Path(max_length=64)):
    registry, _ = _state(request)
    if not valid_name(name):
        raise InvalidInput(f"name: {name!r} is not a valid model name", field="name")
    if name not in registry.models and name not in registry.failed:
        raise ModelNotFound(f"unknown model {name!r}; see GET /models", field="name")
    return _json(_info(registry, name, True))


@router.get("/healthz", response_model=Health, tags=["health"])
async def healthz():
    return _json({"status": "ok"})


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}}, tags=["health"])
async def readyz(request: Request):
    registry, _ = _state(request)
    models = {n: "ready" for n in registry.models} | {n: f"failed: {e}" for n, e in registry.failed.items()}
    ready = registry.ready and not getattr(request.app.state, "draining", False)
    return JSONResponse({"ready": ready, "models": models}, status_code=200 if ready else 503)


@router.get("/metrics", tags=["health"], response_class=Response)
async def prometheus_metrics():
    data, ctype = metrics.render()
    return Response(data, media_type=ctype)
