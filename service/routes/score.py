"""POST /score: realness (discriminator), classifier label and confidence per image; IS and FID.

The body is JSON (base64 PNGs) or multipart/form-data (PNG files); both are bounded (count,
bytes, pixels) before they are decoded. Networks a model lacks are named in `set.warning`.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from .. import imaging, latent, scoring
from ..errors import DeadlineExceeded, InvalidInput, clip, limit_error
from ..formats import json_response
from ..plumbing import ERRORS, body, check_label_range, find_model, parse, run_batched, state
from ..registry import Model
from ..schemas import ScoreRequest, ScoreResponse
from ..settings import Settings

router = APIRouter(tags=["score"], responses=ERRORS)

MULTIPART = {
    "type": "object",
    "required": ["images"],
    "properties": {
        "images": {"type": "array", "items": {"type": "string", "format": "binary"}},
        "model": {"type": "string"},
        "labels": {"type": "string", "description": "comma-separated labels, one per image"},
    },
}


async def _multipart(request: Request, st: Settings) -> tuple[str | None, list[bytes], list[int] | None]:
    try:
        form = await request.form(max_files=st.max_images, max_fields=16, max_part_size=st.max_upload_bytes)
    except HTTPException as exc:  # malformed multipart or too many parts: a client error
        if exc.status_code != 400:
            raise
        detail = str(exc.detail)
        if "files" in detail:
            raise limit_error("images", st.max_images, "more", "files") from None
        limit = 16 if "fields" in detail else None
        raise InvalidInput(f"body: {clip(detail)}", field="body", limit=limit) from None
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
        text = str(raw).replace(" ", "")
        if text.count(",") >= st.max_images:
            raise limit_error("labels", st.max_images, text.count(",") + 1, "labels")
        if not _LABELS.fullmatch(text):  # as strict as JSON: no sign, no `0_1`, no Unicode digits
            raise InvalidInput("labels: comma-separated integers 0-1000000 expected", field="labels")
        labels = [int(x) for x in text.split(",")]
    return (str(model) if model else None), blobs, labels


_LABELS = re.compile(r"(?:0|[1-9][0-9]{0,6})(?:,(?:0|[1-9][0-9]{0,6}))*", re.ASCII)


async def _score_input(request: Request, st: Settings) -> tuple[str | None, list[bytes], list[int] | None]:
    """(model name, PNG bytes per image, labels) from either body."""
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        return await _multipart(request, st)
    req = await parse(request, ScoreRequest)
    if len(req.images) > st.max_images:
        raise limit_error("images", st.max_images, len(req.images), "images")
    return req.model, req.images, req.labels  # base64 decoded with the pixels, off the event loop


def _decode_all(items: list[str] | list[bytes], shape, max_pixels: int) -> np.ndarray:
    """base64 strings (JSON) or PNG bytes (multipart) -> float32 [N, C, H, W]; runs in a thread."""
    arrays = []
    for i, item in enumerate(items):
        data = imaging.b64decode(item, f"images[{i}]") if isinstance(item, str) else item
        arrays.append(imaging.decode_png(data, f"images[{i}]", shape, max_pixels))
    return np.stack(arrays)


async def _decode_within_deadline(items, shape, st: Settings) -> np.ndarray:
    """Uploads decoded in a thread and within the request's deadline (504 past it)."""
    work = run_in_threadpool(_decode_all, items, shape, st.max_image_pixels)
    try:
        return await asyncio.wait_for(work, st.request_timeout_s)
    except TimeoutError:
        t = st.request_timeout_s
        raise DeadlineExceeded(f"images: not decoded within {t:g} s", field="images", limit=t) from None


def _set_scores(logits: np.ndarray, feats: np.ndarray, labels, reference) -> tuple[np.ndarray, dict]:
    """Softmax, IS, label accuracy and FID from the classifier's outputs; runs in a thread
    (FID's matrix square root is 60-130 ms)."""
    probs = scoring.softmax(logits)
    predicted = probs.argmax(axis=1)
    out: dict[str, Any] = {"inception_score": scoring.inception_score(probs)}
    if labels is not None:
        out["label_accuracy"] = float(np.mean(predicted == np.asarray(labels)))
    if reference is not None:
        out["reference_n"] = int(reference["n"])
        if len(feats) >= 2:
            mu, sigma = scoring.feature_stats(feats)
            out["fid"] = scoring.frechet_distance(mu, sigma, reference["mu"], reference["sigma"])
    return probs, out


def _classifier_rows(outputs) -> list:
    return list(zip(outputs[0], outputs[1], strict=True))


async def _classify(
    request: Request, model: Model, x: np.ndarray, labels, scores: list[dict], out: dict
) -> tuple:
    """Fill each score's label and confidence and the set's IS, FID and label accuracy.
    Returns (the predicted labels, warnings)."""
    rows = await run_batched(request, model.classifier, {"image": x}, _classifier_rows)
    logits = np.stack([r[0] for r in rows])
    feats = np.stack([r[1] for r in rows])
    probs, found = await run_in_threadpool(_set_scores, logits, feats, labels, model.reference)
    out.update(found)
    predicted = probs.argmax(axis=1)
    for i, lab in enumerate(predicted.tolist()):
        scores[i].update(label=lab, label_name=model.class_names[lab], confidence=float(probs[i, lab]))
    if model.reference is None:
        return predicted, ["no reference_stats.npz: FID unavailable"]
    w = scoring.fid_warning(len(x))
    return predicted, [w] if w else []


async def _realness(request: Request, model: Model, x: np.ndarray, given, scores: list[dict]) -> None:
    """Each score's realness: sigmoid of the discriminator's logit (given the labels, if any)."""
    n, k = len(x), model.num_classes
    feeds = {"image": x}
    if model.conditional:
        if given is not None and max(given) >= k:
            raise InvalidInput(f"labels: out of range 0..{k - 1}", field="labels")
        y = latent.one_hot(given, k) if given is not None else np.full((n, k), 1.0 / k, np.float32)
        feeds["y"] = y
    logits = np.asarray(await run_batched(request, model.discriminator, feeds), np.float64)
    for i, p in enumerate(scoring.sigmoid(logits)):
        scores[i]["realness"] = float(p)


@router.post("/score", response_model=ScoreResponse)
@body(ScoreRequest, {"multipart/form-data": MULTIPART})
async def score(request: Request):
    """Realness (discriminator), classifier label and confidence per image; IS and FID for the set.

    Body: JSON `{"images": [base64 PNG, ...], "labels": [...], "model": ...}` or multipart/form-data
    with `images` files (and optional `model`, comma-separated `labels`).
    """
    registry, st = state(request)
    name, blobs, labels = await _score_input(request, st)
    model = find_model(registry, name)
    n = len(blobs)
    if labels is not None:
        if len(labels) != n:
            raise InvalidInput(f"labels: {len(labels)} labels for {n} images", field="labels")
        check_label_range(len(model.class_names), labels, "labels")
    x = await _decode_within_deadline(blobs, model.image_shape, st)
    scores: list[dict[str, Any]] = [
        {"realness": None, "label": None, "label_name": None, "confidence": None} for _ in range(n)
    ]
    out: dict[str, Any] = {"n": n}
    warnings, predicted = [], None
    if model.classifier is not None:
        predicted, more = await _classify(request, model, x, labels, scores, out)
        warnings += more
    else:
        warnings.append("no classifier.onnx: labels, IS and FID unavailable")
    if model.discriminator is not None:
        given = labels if labels is not None else (predicted.tolist() if predicted is not None else None)
        await _realness(request, model, x, given, scores)
    else:
        warnings.append("no discriminator.onnx: realness unavailable")
    out["warning"] = "; ".join(warnings) or None
    return json_response({"model": model.name, "scores": scores, "set": out})
