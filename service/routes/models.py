"""GET /models, /models/{name}, /healthz, /readyz, /metrics: what is served and whether it is well.

A model's entry describes its default (newest) version and lists every served one (`versions`).

/healthz says the process is alive (and its version); /readyz says the models are loaded and
warm and the service is not draining (503 otherwise, with each model's state).
"""

from __future__ import annotations

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse, Response

from .. import __version__, metrics
from ..errors import InvalidInput, ModelNotFound
from ..formats import json_response
from ..plumbing import ERRORS, state
from ..registry import Registry, valid_name
from ..schemas import BatcherInfo, Health, ModelInfo, ModelList, Readiness

router = APIRouter()


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
        "versions": list(registry.versions[name]),  # oldest first; this entry is the last
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
    registry, _ = state(request)
    names = sorted(set(registry.models) | set(registry.failed))
    models = [_info(registry, n, False) for n in names]
    return json_response({"version": __version__, "default": registry.default_name, "models": models})


@router.get("/models/{name}", response_model=ModelInfo, responses=ERRORS, tags=["models"])
async def get_model(request: Request, name: str = Path(max_length=64)):
    registry, _ = state(request)
    if not valid_name(name):
        raise InvalidInput(f"name: {name!r} is not a valid model name", field="name")
    if name not in registry.models and name not in registry.failed:
        raise ModelNotFound(f"unknown model {name!r}; see GET /models", field="name")
    return json_response(_info(registry, name, True))


@router.get("/healthz", response_model=Health, tags=["health"])
async def healthz():
    return json_response({"status": "ok", "version": __version__})


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}}, tags=["health"])
async def readyz(request: Request):
    registry, _ = state(request)
    models = {n: "ready" for n in registry.models} | {n: f"failed: {e}" for n, e in registry.failed.items()}
    ready = registry.ready and not getattr(request.app.state, "draining", False)
    return JSONResponse({"ready": ready, "models": models}, status_code=200 if ready else 503)


@router.get("/metrics", tags=["health"], response_class=Response)
async def prometheus_metrics():
    data, ctype = metrics.render()
    return Response(data, media_type=ctype)
