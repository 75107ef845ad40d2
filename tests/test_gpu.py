"""The CUDA path, on a real GPU: skipped where onnxruntime has no working CUDA provider (CI).

Run on a GPU machine with `onnxruntime-gpu` installed (never beside `onnxruntime`):
`pytest tests/test_gpu.py`. The shipped models are served on CUDAExecutionProvider and held to
the same rules as on the CPU: the CPU's pixels (within one grey level of rounding), and images
that do not depend on which other requests shared the batch.
"""

from __future__ import annotations

import base64
import io
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ort = pytest.importorskip("onnxruntime")
if "CUDAExecutionProvider" not in ort.get_available_providers():
    pytest.skip("needs onnxruntime-gpu and a CUDA device", allow_module_level=True)

MODELS = Path(__file__).resolve().parents[1] / "models"
MODEL = "mnist-cdcgan"


def _app(provider: str, **overrides):
    from service.app import create_app
    from service.settings import Settings

    return create_app(Settings(models_dir=MODELS, provider=provider, **overrides))


def _pixels(body: dict) -> np.ndarray:
    images = [Image.open(io.BytesIO(base64.b64decode(i["image"]))) for i in body["images"]]
    return np.stack([np.asarray(im) for im in images])


@pytest.fixture(scope="module")
def cuda_client():
    from starlette.testclient import TestClient

    with TestClient(_app("cuda")) as c:
        info = c.get(f"/models/{MODEL}").json()
        if info["provider"] != "CUDAExecutionProvider":  # listed, but no device or CUDA libraries
            pytest.skip(f"onnxruntime lists CUDA but the model runs on {info['provider']}")
        yield c


def test_every_shipped_model_runs_on_cuda(cuda_client):
    models = cuda_client.get("/models").json()["models"]
    assert {m["name"] for m in models} >= {"mnist-cdcgan", "mnist-dcgan"}
    assert all(m["provider"] == "CUDAExecutionProvider" for m in models), models


def test_cuda_images_match_the_cpu_images(cuda_client):
    from starlette.testclient import TestClient

    body = {"model": MODEL, "seeds": list(range(40)), "labels": [s % 10 for s in range(40)]}
    gpu = _pixels(cuda_client.post("/generate", json=body).json()).astype(int)
    with TestClient(_app("cpu")) as cpu_client:
        cpu = _pixels(cpu_client.post("/generate", json=body).json()).astype(int)
    diff = np.abs(gpu - cpu)
    print(f"CUDA vs CPU: max |diff| {diff.max()} grey levels, {np.mean(diff > 0):.4%} of pixels differ")
    assert diff.max() <= 1


def test_cuda_images_do_not_depend_on_the_batch(cuda_client):
    gen = cuda_client.app.state.registry.models[MODEL].generator
    rows, run = [], gen.run_fn

    def slow_counting(inputs):  # a slow call lets the queue fill, so requests share batches
        rows.append(len(inputs["z"]))
        time.sleep(0.02)
        return run(inputs)

    def post(seeds):
        body = {"model": MODEL, "seeds": seeds, "labels": [s % 10 for s in seeds]}
        r = cuda_client.post("/generate", json=body)
        assert r.status_code == 200, r.text
        return [i["image"] for i in r.json()["images"]]

    rng = np.random.default_rng(0)
    jobs = [[int(s) for s in rng.integers(0, 1000, size=int(rng.integers(1, 12)))] for _ in range(48)]
    gen.run_fn = slow_counting
    try:
        with ThreadPoolExecutor(24) as pool:
            together = list(pool.map(post, jobs))
    finally:
        gen.run_fn = run
    assert max(rows) > 12, rows  # requests really shared batches
    for seeds, images in zip(jobs[:4], together[:4], strict=True):
        for s, img in zip(seeds, images, strict=True):
            assert post([s])[0] == img, f"seed {s}: alone differs from in a batch of up to {max(rows)}"
