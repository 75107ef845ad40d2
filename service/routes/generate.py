"""POST /generate, /interpolate, /arithmetic: images from seeds and latents, one generator call each.

Each handler checks its request against the settings' limits and the model, builds the latents
(`service.latent`), runs them through the generator's batcher in the negotiated format and
renders the reply. Every image comes back with what made it (seed, label, latent on request),
so it can be re-made or used as a keyframe.
"""

from __future__ import annotations

import random

import numpy as np
from fastapi import APIRouter, Request
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool

from .. import latent, metrics
from ..errors import InvalidInput, limit_error
from ..formats import Format, Reply, negotiate, openapi_responses
from ..plumbing import ERRORS, body, check_label_range, parse_for_model, run_batched
from ..registry import Model
from ..schemas import (
    MAX_SEED,
    ArithmeticRequest,
    ArithmeticResponse,
    GenerateRequest,
    GenerateResponse,
    InterpolateRequest,
    InterpolateResponse,
)
from ..settings import Settings


class DirectRoute(APIRoute):
    """A route whose endpoint takes the Request and returns a Response itself (it parses its own
    body: `plumbing.parse`), so FastAPI's per-request handler (dependency solving, body and
    response-model handling: about a tenth of the event loop's time per single-image request,
    docs/BENCHMARKS.md) is skipped; OpenAPI still comes from the route's declaration, and the
    app's exception handlers still answer what the endpoint raises. FastAPI's documented hook."""

    def get_route_handler(self):
        return self.endpoint


router = APIRouter(tags=["generate"], responses=ERRORS, route_class=DirectRoute)


# --- checks and inputs ------------------------------------------------------------------------


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
    check_label_range(model.num_classes, labels, field)
    return labels


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


_SEEDS = random.Random()  # seeded from os.urandom once; a seed needs no secrecy, only spread


def _random_seed(room: int = 0) -> int:
    """A base seed for a request without one (the reply names it). Not `secrets`: a getrandom
    system call per request showed up at ~2% of the server's samples under load at n=1."""
    return _SEEDS.randrange(MAX_SEED - room)


def _seeds(body: GenerateRequest, st: Settings) -> tuple[list[int] | range, int | None]:
    """The seed of each image, and the base seed when they were not given one by one."""
    if body.seeds is not None:
        if len(body.seeds) > st.max_images:
            raise limit_error("seeds", st.max_images, len(body.seeds), "seeds")
        return body.seeds, None
    n = body.n or (len(body.labels) if isinstance(body.labels, list) else 1)
    if n > st.max_images:
        raise limit_error("n", st.max_images, n, "images")
    base = body.seed if body.seed is not None else _random_seed(st.max_images)
    if base + n - 1 > MAX_SEED:
        raise InvalidInput(f"seed: seed + n - 1 must stay below 2**63 (seed {base}, n {n})", field="seed")
    return range(base, base + n), base


def _keyframes(model: Model, body: InterpolateRequest, st: Settings) -> tuple[np.ndarray, list[int]]:
    """The keyframes' latents [K, d] and (conditional models) labels, checked against the limits."""
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
            check_label_range(model.num_classes, [label], f"keyframes[{i}].label")
            labels.append(label)
        elif f.label is not None:
            raise InvalidInput(
                f"keyframes[{i}].label: model {model.name!r} is unconditional", field=f"keyframes[{i}].label"
            )
        points.append(z)
    return np.stack(points), labels


def _combination(model: Model, body: ArithmeticRequest, st: Settings) -> tuple[np.ndarray, int | None]:
    """sum_i weight_i * mean(latents of term i), and the output label (conditional models)."""
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
    label = None
    if model.conditional:
        label = body.label if body.label is not None else (first_label or 0)
        check_label_range(model.num_classes, [label], "label")
    elif body.label is not None:
        raise InvalidInput(f"label: model {model.name!r} is unconditional", field="label")
    return latent.combine(groups, weights), label


def _csv(values) -> str:
    return ",".join(str(v) for v in values)


async def _run_generator(
    request: Request, model: Model, z: np.ndarray, y: np.ndarray | None, fmt: Format
) -> list:
    """Run the latents (and labels) through the generator in `fmt`; count the images."""
    items = await run_batched(request, model.generator, _feeds(model, z, y), fmt.post)
    metrics.IMAGES_GENERATED.labels(model.name, model.version).inc(len(items))
    return items


# --- endpoints --------------------------------------------------------------------------------


GENERATE_FORMATS = ("png", "npy")
# Latents for up to this many seeds are drawn on the event loop (~13 us each: under a millisecond);
# a thread hop costs more than that saves, and under load every core is busy anyway.
INLINE_LATENTS = 64
SEED_HEADERS = {
    "X-Seed": "the base seed (or the first seed)",
    "X-Seeds": "the seed of each image, comma-separated",
    "X-Labels": "the label of each image, comma-separated (conditional models)",
}


@router.post(
    "/generate", response_model=GenerateResponse, responses=openapi_responses(GENERATE_FORMATS, SEED_HEADERS)
)
@body(GenerateRequest)
async def generate(request: Request):
    """Sample images. Image i uses seed `seed + i` (or `seeds[i]`); `Accept: image/png` gives a grid,
    `Accept: application/x-npy` one uint8 array (seeds and labels in the X-Seeds and X-Labels headers)."""
    body, model, st = await parse_for_model(request, GenerateRequest)
    fmt = negotiate(request, GENERATE_FORMATS)
    seeds, base = _seeds(body, st)
    n, k = len(seeds), model.num_classes
    labels = _check_labels(model, body.labels, n)
    args = (seeds, model.latent_dim, k, body.truncation)
    if n > INLINE_LATENTS:
        z, drawn = await run_in_threadpool(latent.latents_for_seeds, *args)
    else:
        z, drawn = latent.latents_for_seeds(*args)
    labels = labels if labels is not None else drawn
    y = latent.one_hot(labels, k) if model.conditional else None
    items = await _run_generator(request, model, z, y, fmt)

    def as_json(items: list) -> dict:
        images = []
        for i, s in enumerate(seeds):
            img = {"seed": s, "label": labels[i] if labels is not None else None, "image": items[i]}
            if body.return_latents:
                img["latent"] = z[i].tolist()
            images.append(img)
        return {"model": model.name, "seed": base, "images": images}

    made = None
    if fmt.binary:  # the JSON body names them already
        made = {"X-Seed": str(base if base is not None else seeds[0]), "X-Seeds": _csv(seeds)}
        if labels is not None:
            made["X-Labels"] = _csv(labels)
    return await fmt.render(items, Reply(as_json, layout="grid", headers=made))


INTERPOLATE_FORMATS = ("gif", "png", "npy")


@router.post(
    "/interpolate", response_model=InterpolateResponse, responses=openapi_responses(INTERPOLATE_FORMATS)
)
@body(InterpolateRequest)
async def interpolate(request: Request):
    """Walk through keyframes (seeds or latents); `Accept: image/png` a strip, `image/gif` an animation,
    `application/x-npy` the frames as one uint8 array."""
    body, model, st = await parse_for_model(request, InterpolateRequest)
    fmt = negotiate(request, INTERPOLATE_FORMATS)
    points, labels = _keyframes(model, body, st)
    y_key = latent.one_hot(labels, model.num_classes) if model.conditional else None
    zs, ys, ts = latent.walk(points, body.steps, body.method, y_key)
    items = await _run_generator(request, model, zs, ys, fmt)

    def as_json(items: list) -> dict:
        frames = []
        for i, img in enumerate(items):
            label = ys[i].tolist() if ys is not None else None
            frame = {"index": i, "t": float(ts[i]), "label": label, "image": img}
            if body.return_latents:
                frame["latent"] = zs[i].tolist()
            frames.append(frame)
        return {"model": model.name, "method": body.method, "frames": frames}

    return await fmt.render(items, Reply(as_json, duration_ms=body.duration_ms))


ARITHMETIC_FORMATS = ("png", "npy")
ARITHMETIC_HEADERS = {
    "X-Label": "the label of every image (conditional models)",
    "X-Seed": "the seed of the neighbours' noise",
}


@router.post(
    "/arithmetic",
    response_model=ArithmeticResponse,
    responses=openapi_responses(ARITHMETIC_FORMATS, ARITHMETIC_HEADERS),
)
@body(ArithmeticRequest)
async def arithmetic(request: Request):
    """sum_i weight_i * mean(latents of term i), plus `neighbors` noisy variants (DCGAN fig. 7);
    binary replies (`image/png`, `application/x-npy`) hold the result first, then the neighbours."""
    body, model, st = await parse_for_model(request, ArithmeticRequest)
    fmt = negotiate(request, ARITHMETIC_FORMATS)
    result, label = _combination(model, body, st)
    seed = None
    zs = result[None, :]
    if body.neighbors:
        seed = body.seed if body.seed is not None else _random_seed()
        zs = np.concatenate([zs, latent.neighbours(result, body.neighbors, body.noise_scale, seed)])
    y = latent.one_hot([label] * len(zs), model.num_classes) if model.conditional else None
    items = await _run_generator(request, model, zs, y, fmt)

    def as_json(items: list) -> dict:
        pairs = [{"image": img, "latent": zs[i].tolist()} for i, img in enumerate(items)]
        return {"model": model.name, "label": label, "seed": seed, "result": pairs[0], "neighbors": pairs[1:]}

    made = {k: str(v) for k, v in (("X-Label", label), ("X-Seed", seed)) if v is not None}
    return await fmt.render(items, Reply(as_json, headers=made or None))
