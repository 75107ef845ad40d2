"""The naive baselines (bench/naive.py) as the suite starts them: real uvicorn, correct replies.

The goals' ratios are held against the strong variant (sync handler, one ORT thread): it must
really be that server, answer what the service answers, and be started with the settings asked for.
"""

from __future__ import annotations

import base64
import importlib
import inspect
import io

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from bench import suite

MODELS = suite.ROOT / "models"


@pytest.mark.parametrize(("threads", "intra"), [("1", 1), ("0", 0)])
def test_naive_session_threads_and_sync_handler(monkeypatch, threads, intra):
    monkeypatch.setenv("GANSERVE_BENCH_MODEL", str(MODELS / "mnist-cdcgan"))
    monkeypatch.setenv("GANSERVE_BENCH_NAIVE_THREADS", threads)
    import bench.naive

    naive = importlib.reload(bench.naive)
    opts = naive.session.get_session_options()
    assert opts.intra_op_num_threads == intra  # 0: ONNX Runtime's default (a thread per core)
    assert opts.inter_op_num_threads == intra
    assert not inspect.iscoroutinefunction(naive.generate)  # a sync def: Starlette's thread pool


def test_strong_naive_server_answers_like_the_service():
    with suite.server("naive", {"NAIVE_THREADS": "1", "MODEL": "mnist-cdcgan"}, MODELS) as (url, pid):
        assert pid > 0
        r = httpx.post(url + "/generate", json={"n": 3, "seed": 5}, timeout=30)
        assert r.status_code == 200
        images = r.json()["images"]
        # the probe that guards the raw rows: the naive server has no .npy replies
        assert "ignores Accept" in suite.raw_unavailable(url, "n16raw")
        rows = suite.closed_points(url, pid, [("n1raw", 2)], suite.QUICK)
        assert rows == [{"case": "n1raw", "concurrency": 2, "skipped": suite.raw_unavailable(url, "n1raw")}]
    assert [i["seed"] for i in images] == [5, 6, 7]
    assert all(0 <= i["label"] <= 9 for i in images)
    # same pixels as ONNX Runtime on the naive server's own latents (one rng per request)
    rng = np.random.default_rng(5)
    z = rng.standard_normal((3, 100)).astype(np.float32)
    y = np.eye(10, dtype=np.float32)[rng.integers(10, size=3)]
    assert [i["label"] for i in images] == y.argmax(1).tolist()
    sess = ort.InferenceSession(
        str(MODELS / "mnist-cdcgan" / "generator.onnx"), providers=["CPUExecutionProvider"]
    )
    want = ((sess.run(None, {"z": z, "y": y})[0][:, 0] + 1) * 127.5).clip(0, 255).astype(np.uint8)
    got = np.stack([np.asarray(Image.open(io.BytesIO(base64.b64decode(i["image"])))) for i in images])
    assert got.shape == (3, 28, 28)
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1
