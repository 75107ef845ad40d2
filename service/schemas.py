"""Request and response models of the HTTP API, shared by the service and the SDK.

Why one module with only pydantic and the standard library: `service/client.py` imports it on
machines that have neither FastAPI nor ONNX Runtime. Static bounds (types, signs, the seed range,
no NaN/inf, no unknown fields) live here; limits that are settings (how many images, steps,
keyframes, terms, bytes) are checked by the service against its settings and answered with 422
naming the field and the limit.

Every list has a length bound here (`max_length`, shown in the OpenAPI document) and is validated
fail-fast, so a hostile list costs one error, not one per item; the settings' own limits (lower,
or equal) are checked after parsing. The service counts a body's JSON values before it parses
(`plumbing.parse`), so no body makes pydantic build a tree larger than any request needs.

Images travel as base64-encoded PNG strings. Seeds are non-negative integers below 2**63; one
seed makes one latent: `z = numpy.random.default_rng(seed).standard_normal(latent_dim)`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_SEED = 2**63 - 1
# Ceilings of the list lengths; the settings' limits (service/settings.py) may not exceed them.
MAX_IMAGES = 4096  # seeds, labels, uploaded images per request
MAX_KEYFRAMES = 1024
MAX_TERMS = 256
MAX_GROUP_SIZE = 4096  # seeds or latents per arithmetic term
MAX_LATENT_DIM = 4096
MAX_NAME = 64  # model names: ^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$ (service.registry.valid_name)

Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]
# A model version: the whole number naming its folder models/<name>/<version>/ ("1": a flat folder).
ModelVersion = Annotated[str, Field(pattern=r"^[0-9]{1,18}$")]
Label = Annotated[int, Field(ge=0, le=1_000_000)]
# Latent coordinates are standard-normal draws; anything far outside is a client error.
Coord = Annotated[float, Field(ge=-1e4, le=1e4)]
Latent = Annotated[list[Coord], Field(min_length=1, max_length=MAX_LATENT_DIM, fail_fast=True)]
ModelName = Annotated[str, Field(min_length=1, max_length=MAX_NAME)]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class _Response(BaseModel):
    model_config = ConfigDict(extra="ignore")  # the SDK tolerates fields added later


# --- /generate ----------------------------------------------------------------------------------


class GenerateRequest(_Request):
    model: ModelName | None = Field(None, description="Model name; the service's default model if absent.")
    version: ModelVersion | None = Field(
        None, description='Model version, e.g. "2" (a folder models/<name>/2/); the newest if absent.'
    )
    n: int | None = Field(
        None, ge=1, description="Number of images (default: one per label when labels is a list, else 1)."
    )
    seeds: list[Seed] | None = Field(
        None,
        min_length=1,
        max_length=MAX_IMAGES,
        fail_fast=True,
        description="One seed per image; overrides `n` and `seed`.",
    )
    seed: Seed | None = Field(
        None, description="Base seed: image i uses seed + i. Random if absent; echoed back."
    )
    labels: (
        Label | Annotated[list[Label], Field(min_length=1, max_length=MAX_IMAGES, fail_fast=True)] | None
    ) = Field(
        None,
        description="Conditional models only: one label for all images, one per image, or absent "
        "(each image's label is drawn from its own seed).",
    )
    truncation: float | None = Field(
        None, ge=0.05, le=100.0, description="Resample latent coordinates with |z_i| > truncation."
    )
    return_latents: bool = False


class GeneratedImage(_Response):
    seed: int | None = None
    label: int | None = None
    image: str = Field(description="base64 PNG")
    latent: list[float] | None = None


class GenerateResponse(_Response):
    model: str
    seed: int | None = Field(None, description="The base seed (when seeds were not given).")
    images: list[GeneratedImage]


# --- /interpolate -------------------------------------------------------------------------------


class Keyframe(_Request):
    seed: Seed | None = None
    latent: Latent | None = None
    label: Label | None = Field(
        None, description="Conditional models: the keyframe's label (default: drawn from its seed)."
    )

    @model_validator(mode="after")
    def _one_source(self) -> Keyframe:
        if (self.seed is None) == (self.latent is None):
            raise ValueError("a keyframe needs exactly one of `seed` or `latent`")
        return self


class InterpolateRequest(_Request):
    model: ModelName | None = None
    version: ModelVersion | None = Field(None, description="Model version; the newest if absent.")
    keyframes: list[Keyframe] = Field(min_length=2, max_length=MAX_KEYFRAMES, fail_fast=True)
    steps: int = Field(8, ge=1, description="Frames per segment (the last keyframe is added at the end).")
    method: Literal["slerp", "lerp"] = "slerp"
    truncation: float | None = Field(None, ge=0.05, le=100.0)
    return_latents: bool = False
    duration_ms: int = Field(80, ge=10, le=10_000, description="GIF frame duration (Accept: image/gif).")


class Frame(_Response):
    index: int
    t: float = Field(description="Position along the whole walk, 0..1.")
    label: list[float] | None = Field(None, description="The (interpolated) label vector.")
    image: str
    latent: list[float] | None = None


class InterpolateResponse(_Response):
    model: str
    method: str
    frames: list[Frame]


# --- /arithmetic --------------------------------------------------------------------------------


class ArithmeticTerm(_Request):
    weight: float = Field(1.0, ge=-100.0, le=100.0)
    seeds: list[Seed] | None = Field(None, min_length=1, max_length=MAX_GROUP_SIZE, fail_fast=True)
    latents: list[Latent] | None = Field(None, min_length=1, max_length=MAX_GROUP_SIZE, fail_fast=True)

    @model_validator(mode="after")
    def _one_source(self) -> ArithmeticTerm:
        if (self.seeds is None) == (self.latents is None):
            raise ValueError("a term needs exactly one of `seeds` or `latents`")
        return self


class ArithmeticRequest(_Request):
    model: ModelName | None = None
    version: ModelVersion | None = Field(None, description="Model version; the newest if absent.")
    terms: list[ArithmeticTerm] = Field(min_length=1, max_length=MAX_TERMS, fail_fast=True)
    label: Label | None = Field(None, description="Conditional models: the output label (default 0).")
    neighbors: int = Field(0, ge=0, description="Extra samples: result + uniform noise in +-noise_scale.")
    noise_scale: float = Field(0.25, ge=0.0, le=10.0)
    seed: Seed | None = Field(None, description="Seed of the neighbours' noise (random if absent).")


class LatentImage(_Response):
    image: str
    latent: list[float]


class ArithmeticResponse(_Response):
    model: str
    label: int | None = None
    seed: int | None = None
    result: LatentImage
    neighbors: list[LatentImage] = []


# --- /score -------------------------------------------------------------------------------------


class ScoreRequest(_Request):
    model: ModelName | None = None
    images: list[str] = Field(
        min_length=1,
        max_length=MAX_IMAGES,
        fail_fast=True,
        description="base64 PNG images of the model's shape",
    )
    labels: list[Label] | None = Field(
        None,
        min_length=1,
        max_length=MAX_IMAGES,
        fail_fast=True,
        description="The intended labels, one per image.",
    )


class ImageScore(_Response):
    realness: float | None = Field(None, description="sigmoid of the discriminator's logit")
    label: int | None = Field(None, description="the classifier's label")
    label_name: str | None = None
    confidence: float | None = None


class SetScore(_Response):
    n: int
    inception_score: float | None = None
    fid: float | None = None
    reference_n: int | None = None
    label_accuracy: float | None = None
    warning: str | None = None


class ScoreResponse(_Response):
    model: str
    scores: list[ImageScore]
    set: SetScore


# --- models, health, errors ---------------------------------------------------------------------


class BatcherInfo(_Response):
    max_batch_size: int
    max_queue_delay_ms: float
    max_queue_rows: int
    inference_threads: int


class ModelInfo(_Response):
    name: str
    status: Literal["ready", "failed"]
    error: str | None = None
    kind: str | None = None
    version: str | None = None
    versions: list[str] | None = Field(
        None, description="served versions, oldest first (this entry and requests without one: the last)"
    )
    latent_dim: int | None = None
    num_classes: int | None = None
    class_names: list[str] | None = None
    image_shape: list[int] | None = None
    provider: str | None = None
    capabilities: list[str] = []
    batcher: BatcherInfo | None = None
    card: dict[str, Any] | None = Field(None, description="model.json as loaded")


class ModelList(_Response):
    version: str | None = Field(None, description="the service's version (ganserve)")
    default: str | None
    models: list[ModelInfo]


class Health(_Response):
    status: str
    version: str | None = Field(None, description="the service's version (ganserve)")


class Readiness(_Response):
    ready: bool
    models: dict[str, str] = Field(description="name -> 'ready' or 'failed: <reason>'")


class ErrorBody(_Response):
    error: str = Field(description="machine-readable code, e.g. invalid_input, model_not_found")
    detail: str = Field(description="human-readable message")
    field: str | None = Field(None, description="the offending request field, when there is one")
    limit: int | float | None = None
    request_id: str | None = Field(None, description="the X-Request-ID of the request, for the logs")
