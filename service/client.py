"""Python SDK for a ganserve service: `GanClient` (sync) and `AsyncGanClient` (async), over httpx.

    with GanClient("http://127.0.0.1:8000") as gan:
        sevens = gan.generate(labels=7, n=16, seed=1)
        sevens.save_grid("sevens.png")
        batch = gan.generate_array(labels=7, n=256, seed=1)  # one uint8 array, no PNG work
        batch.images.shape  # (256, 28, 28)
        walk = gan.interpolate(keyframes=[{"seed": 1, "label": 3}, {"seed": 2, "label": 8}], steps=16)
        walk.save_gif("walk.gif")

`latents(seeds, latent_dim, num_classes)` gives the z (and one-hot y) the service feeds its
generator for those seeds, so a KServe v2 client (ganserve's /v2, or Triton) makes /generate's images.

Both clients share `_BaseClient`, which holds everything without I/O (URL building, request
encoding with the service's own pydantic schemas, response decoding, the error-to-exception
mapping and the retry policy); they differ only in how they send and sleep. Importing this module
needs httpx, pydantic, numpy and Pillow, not FastAPI or ONNX Runtime.

Exceptions (one tree; library errors are translated at one boundary, `raise ... from exc`):

    GanServeError
     ├── TransportError        no HTTP answer: connection refused, DNS, timeouts
     └── APIError              the service answered with an error (status, code, detail, request_id, ...)
          ├── BadRequest       400, 413, 422: the request is wrong; never retried
          ├── Unauthorized     401, 403
          ├── NotFound         404: unknown model or path
          ├── Overloaded       503 overloaded / shutting_down: retried, honouring Retry-After
          ├── ModelUnavailable 503 model_unavailable: the model failed to load; not retried
          ├── DeadlineExceeded 504: the request waited past its deadline
          └── ServerError      other 5xx

The class comes from the error body's `error` code when it is one the service sends (a 503 is
`Overloaded` or `ModelUnavailable` by its code), else from the status alone (a proxy's 503).

Retries: on `Overloaded` and on connection errors (not on read timeouts of a request the server
may be running), with exponential backoff and full jitter, honouring Retry-After, bounded by
`retries` attempts and `max_retry_seconds` in total. A 4xx is never retried.
"""

from __future__ import annotations

import asyncio
import base64
import io
import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from PIL import Image as PILImage
from pydantic import BaseModel, ValidationError

from modelformat import latent as _latent_rule

from .schemas import (
    ArithmeticRequest,
    ArithmeticResponse,
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

__all__ = [
    "APIError",
    "ArithmeticResult",
    "AsyncGanClient",
    "BadRequest",
    "DeadlineExceeded",
    "GanClient",
    "GanServeError",
    "Image",
    "ImageArray",
    "ImageSet",
    "ModelUnavailable",
    "NotFound",
    "Overloaded",
    "ServerError",
    "TransportError",
    "Unauthorized",
    "latents",
]

# --- exceptions ----------------------------------------------------------------------------------


class GanServeError(Exception):
    """Base of every error the SDK raises."""


class TransportError(GanServeError):
    """The request got no HTTP answer (connection refused, DNS failure, timeout)."""


class APIError(GanServeError):
    """The service answered with an error status."""

    def __init__(
        self,
        status: int,
        detail: str,
        request_id: str | None = None,
        *,
        code: str | None = None,
        field: str | None = None,
        limit: float | None = None,
        retry_after: float | None = None,
    ):
        self.status, self.detail, self.request_id = status, detail, request_id
        self.code, self.field, self.limit, self.retry_after = code, field, limit, retry_after
        rid = f" (request {request_id})" if request_id else ""
        super().__init__(f"{status} {code or 'error'}: {detail}{rid}")


class BadRequest(APIError):
    """400 / 413 / 422: fix the request (the `field` and `limit` say what is wrong)."""


class Unauthorized(APIError):
    """401 / 403: missing or wrong API key."""


class NotFound(APIError):
    """404: unknown model or path."""


class Overloaded(APIError):
    """503: the service is full or shutting down; try again after `retry_after` seconds."""


class ModelUnavailable(APIError):
    """503 `model_unavailable`: the model exists but failed to load; retrying will not help."""


class DeadlineExceeded(APIError):
    """504: the request waited in the queue past its deadline."""


class ServerError(APIError):
    """Another 5xx."""


_BY_CODE: dict[str, type[APIError]] = {
    "invalid_input": BadRequest,
    "payload_too_large": BadRequest,
    "unauthorized": Unauthorized,
    "not_found": NotFound,
    "model_not_found": NotFound,
    "overloaded": Overloaded,
    "shutting_down": Overloaded,
    "model_unavailable": ModelUnavailable,
    "deadline_exceeded": DeadlineExceeded,
    "inference_failed": ServerError,
    "internal_error": ServerError,
}


def _error_class(status: int, code: str | None) -> type[APIError]:
    """By the service's error code when it sent a known one, else by the status."""
    if code in _BY_CODE:
        return _BY_CODE[code]
    if status in (400, 413, 422):
        return BadRequest
    if status in (401, 403):
        return Unauthorized
    if status == 404:
        return NotFound
    if status == 503:
        return Overloaded
    if status == 504:
        return DeadlineExceeded
    return ServerError if status >= 500 else BadRequest


# --- the latent rule -----------------------------------------------------------------------------


def latents(
    seeds: Sequence[int],
    latent_dim: int,
    num_classes: int = 0,
    *,
    labels: int | Sequence[int] | None = None,
    truncation: float | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """The generator's inputs for `seeds`, by the service's own latent rule (`modelformat.latent`):
    z float32 [N, latent_dim] and, for a conditional model (`num_classes` > 0), y float32
    [N, num_classes] one-hot of `labels` (one for all, or one per seed; default: each seed's own
    drawn label, as /generate draws it), else None.

    Why: a client of a KServe v2 server (ganserve's /v2 or Triton serving the same ONNX files)
    that feeds these gets the images /generate makes for the same seeds, labels and truncation.
    The sizes are the model's: `GET /models/{name}` (latent_dim, num_classes) or the v2 metadata.
    """
    z, drawn = _latent_rule.latents_for_seeds(list(seeds), latent_dim, num_classes, truncation)
    if not num_classes:
        if labels is not None:
            raise ValueError("labels: an unconditional model (num_classes=0) takes no labels")
        return z, None
    chosen = drawn if labels is None else [labels] * len(z) if isinstance(labels, int) else list(labels)
    if len(chosen) != len(z) or not all(0 <= int(k) < num_classes for k in chosen):
        raise ValueError(f"labels: give one label or one per seed, each in 0..{num_classes - 1}")
    return z, _latent_rule.one_hot(chosen, num_classes)


# --- results -------------------------------------------------------------------------------------


@dataclass
class Image:
    """One generated image: PNG bytes plus what made it (seed, label, latent)."""

    png: bytes
    seed: int | None = None
    label: int | list[float] | None = None
    latent: np.ndarray | None = None
    t: float | None = None  # position along an interpolation walk

    @property
    def pil(self) -> PILImage.Image:
        return PILImage.open(io.BytesIO(self.png))

    @property
    def array(self) -> np.ndarray:
        """uint8 pixels, [H, W] for grey or [H, W, C]."""
        return np.asarray(self.pil)

    def save(self, path: str | Path) -> Path:
        Path(path).write_bytes(self.png)
        return Path(path)


def _tile(images: Sequence[PILImage.Image], nrow: int, pad: int = 2) -> PILImage.Image:
    w, h = images[0].size
    rows = -(-len(images) // nrow)
    sheet = PILImage.new(images[0].mode, (pad + nrow * (w + pad), pad + rows * (h + pad)))
    for i, img in enumerate(images):
        r, c = divmod(i, nrow)
        sheet.paste(img, (pad + c * (w + pad), pad + r * (h + pad)))
    return sheet


@dataclass
class ImageSet:
    """A list of images with helpers to save them one by one, as a grid, a strip or a GIF."""

    model: str
    images: list[Image]
    seed: int | None = None

    def __len__(self) -> int:
        return len(self.images)

    def __iter__(self):
        return iter(self.images)

    def __getitem__(self, i: int) -> Image:
        return self.images[i]

    @property
    def arrays(self) -> np.ndarray:
        """All images stacked: uint8 [N, H, W] or [N, H, W, C]."""
        return np.stack([img.array for img in self.images])

    def grid(self, nrow: int | None = None, scale: int = 1) -> PILImage.Image:
        nrow = nrow or max(1, int(np.ceil(np.sqrt(len(self.images)))))
        sheet = _tile([img.pil for img in self.images], nrow)
        return sheet.resize((sheet.width * scale, sheet.height * scale), PILImage.Resampling.NEAREST)

    def save_grid(self, path: str | Path, nrow: int | None = None, scale: int = 2) -> Path:
        self.grid(nrow, scale).save(path)
        return Path(path)

    def save_strip(self, path: str | Path, scale: int = 2) -> Path:
        return self.save_grid(path, nrow=len(self.images), scale=scale)

    def save_gif(self, path: str | Path, duration_ms: int = 80, scale: int = 4, loop: bool = True) -> Path:
        frames = [img.pil.convert("L" if img.pil.mode == "L" else "RGB") for img in self.images]
        frames = [f.resize((f.width * scale, f.height * scale), PILImage.Resampling.NEAREST) for f in frames]
        frames[0].save(
            path, save_all=True, append_images=frames[1:], duration=duration_ms, loop=0 if loop else 1
        )
        return Path(path)

    def save_all(self, folder: str | Path, pattern: str = "{i:03d}_seed{seed}.png") -> list[Path]:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        return [img.save(folder / pattern.format(i=i, seed=img.seed)) for i, img in enumerate(self.images)]


@dataclass
class ImageArray:
    """Images as one uint8 array (the service's `application/x-npy` reply) and what made them."""

    images: np.ndarray  # uint8 [N, H, W] for one channel, else [N, H, W, C]
    seeds: list[int] | None = None
    labels: list[int] | None = None

    def __len__(self) -> int:
        return len(self.images)


@dataclass
class ArithmeticResult:
    model: str
    result: Image
    neighbors: ImageSet
    label: int | None = None
    seed: int | None = None


@dataclass
class _Call:
    """One request, ready to send: the same object drives the sync and the async send loop."""

    method: str
    path: str
    json: dict | None = None
    accept: str | None = None  # the reply format (default: JSON)


NPY = "application/x-npy"


def _b64png(png: str) -> bytes:
    return base64.b64decode(png)


def _latent(values) -> np.ndarray | None:
    return None if values is None else np.asarray(values, dtype=np.float32)


# --- the shared base (no I/O) ---------------------------------------------------------------------


class _BaseClient:
    """Everything but I/O. Arguments (keyword-only after `base_url`, the same in both clients):

    timeout: seconds per HTTP request; api_key: sent as `Authorization: Bearer <key>`;
    retries: extra attempts after a 503 or a connection error; backoff, max_backoff: the full-jitter
    window is uniform(0, min(max_backoff, backoff * 2**attempt)) seconds, never shorter than
    Retry-After; max_retry_seconds: no retry starts whose wait would pass this total;
    headers: extra headers on every request; transport: an httpx transport (tests, ASGI apps).
    """

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        timeout: float = 30.0,
        api_key: str | None = None,
        retries: int = 3,
        backoff: float = 0.2,
        max_backoff: float = 5.0,
        max_retry_seconds: float = 30.0,
        headers: dict[str, str] | None = None,
    ):
        if retries < 0 or backoff < 0 or max_retry_seconds < 0:
            raise ValueError("retries, backoff and max_retry_seconds must be >= 0")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.retries, self.backoff, self.max_backoff = retries, backoff, max_backoff
        self.max_retry_seconds = max_retry_seconds
        self.headers = {"User-Agent": "ganserve-sdk", **(headers or {})}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"

    # requests ----------------------------------------------------------------------------------
    @staticmethod
    def _body(schema: type[BaseModel], **fields) -> dict:
        """Validate with the service's own schema; a local failure reads like the service's 422."""
        try:
            return schema(**{k: v for k, v in fields.items() if v is not None}).model_dump(exclude_none=True)
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(p) for p in first["loc"])
            raise BadRequest(422, f"{loc}: {first['msg']}", code="invalid_input", field=loc) from exc

    def _generate_call(self, accept: str | None = None, **kw) -> _Call:
        return _Call("POST", "/generate", json=self._body(GenerateRequest, **kw), accept=accept)

    def _interpolate_call(self, **kw) -> _Call:
        return _Call("POST", "/interpolate", json=self._body(InterpolateRequest, **kw))

    def _arithmetic_call(self, **kw) -> _Call:
        return _Call("POST", "/arithmetic", json=self._body(ArithmeticRequest, **kw))

    def _score_call(self, images: Iterable, model: str | None, labels) -> _Call:
        encoded = [base64.b64encode(_png_bytes(img)).decode("ascii") for img in images]
        return _Call(
            "POST", "/score", json=self._body(ScoreRequest, images=encoded, model=model, labels=labels)
        )

    # responses ---------------------------------------------------------------------------------
    @staticmethod
    def _raise_for_status(response: httpx.Response) -> None:
        if response.status_code < 400:
            return
        try:
            body = response.json()
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        detail = body.get("detail") or response.text[:500] or response.reason_phrase
        request_id = response.headers.get("x-request-id") or body.get("request_id")
        code = body.get("error") if isinstance(body.get("error"), str) else None
        raise _error_class(response.status_code, code)(
            response.status_code,
            str(detail),
            request_id,
            code=code,
            field=body.get("field"),
            limit=body.get("limit"),
            retry_after=_retry_after(response),
        )

    @staticmethod
    def _images(model: str, items, seed: int | None = None) -> ImageSet:
        return ImageSet(
            model,
            [
                Image(
                    _b64png(it.image),
                    getattr(it, "seed", None),
                    it.label,
                    _latent(it.latent),
                    getattr(it, "t", None),
                )
                for it in items
            ],
            seed,
        )

    def _decode_generate(self, response: httpx.Response) -> ImageSet:
        r = GenerateResponse.model_validate_json(response.content)
        return self._images(r.model, r.images, r.seed)

    def _decode_interpolate(self, response: httpx.Response) -> ImageSet:
        r = InterpolateResponse.model_validate_json(response.content)
        return self._images(r.model, r.frames)

    @staticmethod
    def _decode_array(response: httpx.Response) -> ImageArray:
        """An `application/x-npy` reply: the array, seeds and labels from X-Seeds and X-Labels."""
        ctype = response.headers.get("content-type", "")
        if not ctype.startswith(NPY):
            raise ServerError(response.status_code, f"expected {NPY}, got {ctype or 'no content type'}")
        images = np.load(io.BytesIO(response.content), allow_pickle=False)

        def ints(header: str) -> list[int] | None:
            value = response.headers.get(header)
            return [int(v) for v in value.split(",")] if value else None

        return ImageArray(images, ints("x-seeds"), ints("x-labels"))

    @staticmethod
    def _decode_arithmetic(response: httpx.Response) -> ArithmeticResult:
        r = ArithmeticResponse.model_validate_json(response.content)
        neighbors = [Image(_b64png(n.image), latent=_latent(n.latent), label=r.label) for n in r.neighbors]
        return ArithmeticResult(
            r.model,
            Image(_b64png(r.result.image), latent=_latent(r.result.latent), label=r.label),
            ImageSet(r.model, neighbors, r.seed),
            r.label,
            r.seed,
        )

    # retry policy ------------------------------------------------------------------------------
    def _retry_delay(self, attempt: int, error: GanServeError, started: float) -> float | None:
        """Seconds to wait before attempt `attempt + 1`, or None to give up and raise."""
        retryable = isinstance(error, Overloaded | _ConnectError)
        if not retryable or attempt >= self.retries:
            return None
        delay = random.uniform(0, min(self.max_backoff, self.backoff * 2**attempt))  # full jitter
        if isinstance(error, APIError) and error.retry_after is not None:
            delay = max(delay, error.retry_after)
        if time.monotonic() - started + delay > self.max_retry_seconds:
            return None
        return delay

    def _request_kwargs(self, call: _Call) -> dict:
        kwargs = {"method": call.method, "url": call.path, "json": call.json}
        if call.accept:
            kwargs["headers"] = {"Accept": call.accept}
        return kwargs


class _ConnectError(TransportError):
    """A connection could not be made: the request never reached the service (safe to retry)."""


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _png_bytes(img) -> bytes:
    """Accepts PNG bytes, a path, a PIL image, an SDK Image or a uint8 array."""
    if isinstance(img, Image):
        return img.png
    if isinstance(img, bytes | bytearray):
        return bytes(img)
    if isinstance(img, str | Path):
        return Path(img).read_bytes()
    if isinstance(img, np.ndarray):
        img = PILImage.fromarray(img)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _translate(exc: httpx.TransportError) -> TransportError:
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return _ConnectError(f"cannot connect: {exc}")
    return TransportError(f"{type(exc).__name__}: {exc}")


# --- the sync client -----------------------------------------------------------------------------


class GanClient(_BaseClient):
    """Synchronous client. Use as a context manager, or call `close()`."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        timeout: float = 30.0,
        api_key: str | None = None,
        retries: int = 3,
        backoff: float = 0.2,
        max_backoff: float = 5.0,
        max_retry_seconds: float = 30.0,
        headers: dict[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
    ):
        super().__init__(
            base_url, timeout=timeout, api_key=api_key, retries=retries, backoff=backoff,
            max_backoff=max_backoff, max_retry_seconds=max_retry_seconds, headers=headers,
        )  # fmt: skip
        self._http = httpx.Client(
            base_url=self.base_url, timeout=self.timeout, headers=self.headers, transport=transport
        )

    def __enter__(self) -> GanClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, call: _Call, *, ok: tuple[int, ...] = ()) -> httpx.Response:
        started, attempt = time.monotonic(), 0
        while True:
            try:
                try:
                    response = self._http.request(**self._request_kwargs(call))
                except httpx.TransportError as exc:
                    raise _translate(exc) from exc
                if response.status_code not in ok:
                    self._raise_for_status(response)
                return response
            except GanServeError as error:
                delay = self._retry_delay(attempt, error, started)
                if delay is None:
                    raise
                time.sleep(delay)
                attempt += 1

    def generate(
        self,
        *,
        model: str | None = None,
        n: int | None = None,
        seeds: list[int] | None = None,
        seed: int | None = None,
        labels: int | list[int] | None = None,
        truncation: float | None = None,
        return_latents: bool = False,
    ) -> ImageSet:
        call = self._generate_call(
            model=model, n=n, seeds=seeds, seed=seed, labels=labels, truncation=truncation,
            return_latents=return_latents,
        )  # fmt: skip
        return self._decode_generate(self._send(call))

    def generate_array(
        self,
        *,
        model: str | None = None,
        n: int | None = None,
        seeds: list[int] | None = None,
        seed: int | None = None,
        labels: int | list[int] | None = None,
        truncation: float | None = None,
    ) -> ImageArray:
        """Like `generate`, as one uint8 array (`Accept: application/x-npy`): no PNG either side."""
        call = self._generate_call(
            NPY, model=model, n=n, seeds=seeds, seed=seed, labels=labels, truncation=truncation
        )
        return self._decode_array(self._send(call))

    def interpolate(
        self,
        *,
        keyframes: list[dict],
        model: str | None = None,
        steps: int = 8,
        method: str = "slerp",
        truncation: float | None = None,
        return_latents: bool = False,
    ) -> ImageSet:
        call = self._interpolate_call(
            keyframes=keyframes, model=model, steps=steps, method=method, truncation=truncation,
            return_latents=return_latents,
        )  # fmt: skip
        return self._decode_interpolate(self._send(call))

    def arithmetic(
        self,
        *,
        terms: list[dict],
        model: str | None = None,
        label: int | None = None,
        neighbors: int = 0,
        noise_scale: float = 0.25,
        seed: int | None = None,
    ) -> ArithmeticResult:
        call = self._arithmetic_call(
            terms=terms, model=model, label=label, neighbors=neighbors, noise_scale=noise_scale, seed=seed
        )
        return self._decode_arithmetic(self._send(call))

    def score(
        self, images: Iterable, *, model: str | None = None, labels: list[int] | None = None
    ) -> ScoreResponse:
        return ScoreResponse.model_validate_json(self._send(self._score_call(images, model, labels)).content)

    def models(self) -> ModelList:
        return ModelList.model_validate_json(self._send(_Call("GET", "/models")).content)

    def model(self, name: str) -> ModelInfo:
        return ModelInfo.model_validate_json(self._send(_Call("GET", f"/models/{_quote(name)}")).content)

    def health(self) -> Health:
        return Health.model_validate_json(self._send(_Call("GET", "/healthz")).content)

    def ready(self) -> Readiness:
        """Readiness; a not-ready service answers 503 with the same body, returned, not raised."""
        return Readiness.model_validate_json(self._send(_Call("GET", "/readyz"), ok=(503,)).content)


# --- the async client: the same, line for line, where it does I/O ---------------------------------


class AsyncGanClient(_BaseClient):
    """Asynchronous client. Use as an async context manager, or await `aclose()`."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        timeout: float = 30.0,
        api_key: str | None = None,
        retries: int = 3,
        backoff: float = 0.2,
        max_backoff: float = 5.0,
        max_retry_seconds: float = 30.0,
        headers: dict[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ):
        super().__init__(
            base_url, timeout=timeout, api_key=api_key, retries=retries, backoff=backoff,
            max_backoff=max_backoff, max_retry_seconds=max_retry_seconds, headers=headers,
        )  # fmt: skip
        self._http = httpx.AsyncClient(
            base_url=self.base_url, timeout=self.timeout, headers=self.headers, transport=transport
        )

    async def __aenter__(self) -> AsyncGanClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, call: _Call, *, ok: tuple[int, ...] = ()) -> httpx.Response:
        started, attempt = time.monotonic(), 0
        while True:
            try:
                try:
                    response = await self._http.request(**self._request_kwargs(call))
                except httpx.TransportError as exc:
                    raise _translate(exc) from exc
                if response.status_code not in ok:
                    self._raise_for_status(response)
                return response
            except GanServeError as error:
                delay = self._retry_delay(attempt, error, started)
                if delay is None:
                    raise
                await asyncio.sleep(delay)
                attempt += 1

    async def generate(
        self,
        *,
        model: str | None = None,
        n: int | None = None,
        seeds: list[int] | None = None,
        seed: int | None = None,
        labels: int | list[int] | None = None,
        truncation: float | None = None,
        return_latents: bool = False,
    ) -> ImageSet:
        call = self._generate_call(
            model=model, n=n, seeds=seeds, seed=seed, labels=labels, truncation=truncation,
            return_latents=return_latents,
        )  # fmt: skip
        return self._decode_generate(await self._send(call))

    async def generate_array(
        self,
        *,
        model: str | None = None,
        n: int | None = None,
        seeds: list[int] | None = None,
        seed: int | None = None,
        labels: int | list[int] | None = None,
        truncation: float | None = None,
    ) -> ImageArray:
        call = self._generate_call(
            NPY, model=model, n=n, seeds=seeds, seed=seed, labels=labels, truncation=truncation
        )
        return self._decode_array(await self._send(call))

    async def interpolate(
        self,
        *,
        keyframes: list[dict],
        model: str | None = None,
        steps: int = 8,
        method: str = "slerp",
        truncation: float | None = None,
        return_latents: bool = False,
    ) -> ImageSet:
        call = self._interpolate_call(
            keyframes=keyframes, model=model, steps=steps, method=method, truncation=truncation,
            return_latents=return_latents,
        )  # fmt: skip
        return self._decode_interpolate(await self._send(call))

    async def arithmetic(
        self,
        *,
        terms: list[dict],
        model: str | None = None,
        label: int | None = None,
        neighbors: int = 0,
        noise_scale: float = 0.25,
        seed: int | None = None,
    ) -> ArithmeticResult:
        call = self._arithmetic_call(
            terms=terms, model=model, label=label, neighbors=neighbors, noise_scale=noise_scale, seed=seed
        )
        return self._decode_arithmetic(await self._send(call))

    async def score(
        self, images: Iterable, *, model: str | None = None, labels: list[int] | None = None
    ) -> ScoreResponse:
        response = await self._send(self._score_call(images, model, labels))
        return ScoreResponse.model_validate_json(response.content)

    async def models(self) -> ModelList:
        return ModelList.model_validate_json((await self._send(_Call("GET", "/models"))).content)

    async def model(self, name: str) -> ModelInfo:
        return ModelInfo.model_validate_json(
            (await self._send(_Call("GET", f"/models/{_quote(name)}"))).content
        )

    async def health(self) -> Health:
        return Health.model_validate_json((await self._send(_Call("GET", "/healthz"))).content)

    async def ready(self) -> Readiness:
        response = await self._send(_Call("GET", "/readyz"), ok=(503,))
        return Readiness.model_validate_json(response.content)


def _quote(name: str) -> str:
    from urllib.parse import quote

    return quote(name, safe="")
