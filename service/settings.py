"""Every setting of the service in one place, read from `GANSERVE_*` environment variables.

Why pydantic-settings: one typed, validated object, parsed once at the entry point and passed
down (no module reads the environment itself). Unknown keyword arguments are errors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from . import schemas

# The default models: inside the installed package (setup.py copies models/ there when it builds
# the wheel), or, in a clone or an editable install, the repository's models/ next to service/.
PACKAGED_MODELS_DIR = Path(__file__).resolve().parent / "default_models"
REPOSITORY_MODELS_DIR = Path(__file__).resolve().parents[1] / "models"
DEFAULT_MODELS_DIR = PACKAGED_MODELS_DIR if PACKAGED_MODELS_DIR.is_dir() else REPOSITORY_MODELS_DIR
PREFERRED_DEFAULT_MODEL = "mnist-cdcgan"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GANSERVE_", extra="forbid", frozen=True)

    # --- process ---
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    workers: int = Field(1, ge=1, le=64, description="uvicorn worker processes (each loads every model)")
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"

    # --- models ---
    models_dir: Path = Field(
        DEFAULT_MODELS_DIR,
        description="model repository: one sub-directory per model (default: the shipped ones)",
    )
    allow_empty: bool = Field(
        False,
        description="start even when models_dir holds no loadable model (a repository filled later); "
        "otherwise `python -m service` exits at start with a message",
    )
    default_model: str | None = Field(
        None, description="default for requests without `model`: mnist-cdcgan if loaded, else the first"
    )
    provider: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto: CUDA when onnxruntime lists it, else CPU"
    )
    intra_op_threads: int = Field(1, ge=0, le=256, description="ONNX Runtime threads per call (0 = ORT)")
    solo_intra_op_threads: int = Field(
        0,
        ge=0,
        le=256,
        description="CPU: threads for a call that finds no other call in flight, on a second session "
        "(0 = the machine's cores, 1 = no second session): low latency alone, no oversubscription under load",
    )
    warmup: bool = True

    # --- batcher (one per ONNX session) ---
    max_batch_size: int = Field(64, ge=1, le=4096, description="rows per inference call")
    max_queue_delay_ms: float = Field(
        0.0, ge=0.0, le=1000.0, description="wait this long after the first queued row for more rows"
    )
    max_queue_rows: int = Field(2048, ge=1, description="queue bound in rows; full -> 503")
    max_inflight_requests: int = Field(
        256, ge=0, description="POST requests in progress per process; more -> 503 at once (0: no bound)"
    )
    inference_threads: int = Field(2, ge=1, le=64, description="inference calls in flight per session")
    pad_batches: Literal["auto", "on", "off"] = Field(
        "auto",
        description="pad every call to max_batch_size rows so a row's pixels never depend on its "
        "batch; auto: on for CUDA (cuDNN picks kernels by shape), off for CPU (already independent)",
    )
    request_timeout_s: float = Field(10.0, gt=0.0, description="deadline; expired while queued -> 504")
    retry_after_s: int = Field(1, ge=0, description="Retry-After on 503")
    drain_timeout_s: float = Field(10.0, ge=0.0, description="on shutdown, wait this long for the queue")

    # --- request limits (422 naming the field and the limit; 413 for the body) ---
    # (the list limits may not exceed the schemas' ceilings, which the OpenAPI document shows)
    max_images: int = Field(
        256, ge=1, le=schemas.MAX_IMAGES, description="images per request (generate n, frames, neighbours)"
    )
    max_steps: int = Field(64, ge=1, description="interpolation steps per segment")
    max_keyframes: int = Field(16, ge=2, le=schemas.MAX_KEYFRAMES)
    max_terms: int = Field(16, ge=1, le=schemas.MAX_TERMS, description="arithmetic terms")
    max_group_size: int = Field(
        64, ge=1, le=schemas.MAX_GROUP_SIZE, description="seeds or latents per arithmetic term"
    )
    max_upload_bytes: int = Field(8 * 1024 * 1024, ge=1024, description="request body bytes")
    max_json_values: int = Field(
        1 << 18,
        ge=1024,
        description="JSON values (array items and object members) per body, counted before parsing: "
        "more -> 413. Holds the largest request the other limits allow (arithmetic: terms x group x "
        "latent_dim) with latent_dim <= 256",
    )
    max_image_pixels: int = Field(1 << 20, ge=1, description="decoded pixels per uploaded image")

    # --- slow and hostile clients (docs/RELIABILITY.md, "Attacks") ---
    body_timeout_s: float = Field(
        30.0, gt=0.0, description="a POST body must arrive whole within this after its headers; else 408"
    )
    header_timeout_s: float = Field(
        10.0,
        gt=0.0,
        description="a request's headers must arrive whole within this; else the connection closes",
    )
    max_header_bytes: int = Field(
        64 * 1024, ge=1024, le=16 * 1024 * 1024, description="request line + headers; more -> 431, then close"
    )
    max_buffered_bytes: int = Field(
        512 * 1024 * 1024,
        ge=1024,
        description="request body bytes held by this process (bodies still arriving and bodies in "
        "progress); more -> 503 + Retry-After",
    )

    # --- security (all off by default; see docs/RELIABILITY.md) ---
    api_keys: str = Field(
        "",
        description="comma-separated API keys; empty = no auth. Header `Authorization: Bearer <key>` "
        "or `X-API-Key: <key>`",
    )
    open_paths: str = Field(
        "/healthz,/readyz,/metrics", description="comma-separated paths served without a key"
    )
    cors_origins: str = Field("", description="comma-separated CORS origins ('*' for any); empty = CORS off")

    @property
    def api_key_list(self) -> list[str]:
        return [k.strip() for k in self.api_keys.split(",") if k.strip()]

    @property
    def open_path_set(self) -> frozenset[str]:
        return frozenset(p.strip() for p in self.open_paths.split(",") if p.strip())

    @property
    def cors_origin_list(self) -> list[str]:
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]
