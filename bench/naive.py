"""The baseline: the endpoint a user would write from a tutorial.

FastAPI with a pydantic request and response model, one global InferenceSession, a plain `def`
handler (Starlette runs it in its thread pool), one ORT call per request, one Pillow PNG per
image. No batching across requests, no queue bound, no deadline. Same request and reply shape as
the service's `/generate` (JSON, base64 PNGs), so the load generator drives both the same way.

Two variants, by `GANSERVE_BENCH_NAIVE_THREADS`:
- `1` (the default, "strong"): the session at `intra_op_num_threads=1`, `inter_op_num_threads=1`.
  The thread pool then runs one ORT call per core side by side instead of several calls that
  each want every core: the stronger baseline (issue 15), the one the goals' ratios use;
- `0`: ONNX Runtime's default options (a pool of one thread per core per call), issue 6's baseline.

    GANSERVE_BENCH_MODEL=models/mnist-cdcgan uvicorn bench.naive:app --port 8001
"""

from __future__ import annotations

import base64
import io
import json
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI
from PIL import Image
from pydantic import BaseModel

MODEL_DIR = Path(os.environ.get("GANSERVE_BENCH_MODEL", "models/mnist-cdcgan"))
card = json.loads((MODEL_DIR / "model.json").read_text())
PROVIDERS = ["CPUExecutionProvider"]  # the tutorial's GPU line, when the suite runs on CUDA:
if os.environ.get("GANSERVE_BENCH_PROVIDER") == "cuda":
    PROVIDERS = ["CUDAExecutionProvider", "CPUExecutionProvider"]
THREADS = int(os.environ.get("GANSERVE_BENCH_NAIVE_THREADS", "1"))
options = ort.SessionOptions()
if THREADS:
    options.intra_op_num_threads = THREADS
    options.inter_op_num_threads = 1
session = ort.InferenceSession(
    str(MODEL_DIR / card["files"]["generator"]), sess_options=options, providers=PROVIDERS
)
LATENT, CLASSES = card["latent_dim"], card.get("num_classes") or 0

app = FastAPI()


class GenerateRequest(BaseModel):
    n: int = 1
    seed: int | None = None


class ImageOut(BaseModel):
    seed: int
    label: int | None
    image: str


class GenerateResponse(BaseModel):
    images: list[ImageOut]


@app.post("/generate", response_model=GenerateResponse)
def generate(req: GenerateRequest):
    seed = req.seed if req.seed is not None else int(np.random.randint(0, 2**31))
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((req.n, LATENT)).astype(np.float32)
    feeds = {"z": z}
    labels = [None] * req.n
    if CLASSES:
        labels = rng.integers(CLASSES, size=req.n).tolist()
        feeds["y"] = np.eye(CLASSES, dtype=np.float32)[labels]
    out = session.run(None, feeds)[0]
    images = []
    for i in range(req.n):
        pixels = ((out[i, 0] + 1) * 127.5).clip(0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="PNG")
        b64 = base64.b64encode(buf.getvalue()).decode()
        images.append({"seed": seed + i, "label": labels[i], "image": b64})
    return {"images": images}
