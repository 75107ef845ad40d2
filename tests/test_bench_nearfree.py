"""The host-ceiling benchmark's near-free model (bench/nearfree.py) and in-process loops (bench/inproc.py).

The host rows in docs/BENCHMARKS.md mean something only if the near-free directory is a model the
service serves like any other (same inputs and outputs as the model it stands in for, checksums,
card) and its images are what the graph says; and if the in-process loops do the service's work.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx.reference import ReferenceEvaluator
from PIL import Image

from bench import inproc, nearfree
from service import imaging, latent

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "models" / "mnist-cdcgan"


@pytest.fixture(scope="module")
def nearfree_dir(tmp_path_factory) -> Path:
    return nearfree.make_model_dir(tmp_path_factory.mktemp("nearfree"), SHIPPED)


def _expected(mdir: Path, seeds, labels) -> np.ndarray:
    """The generator by ONNX's own reference evaluator (numpy, not ONNX Runtime), uint8 [N, H, W, C]."""
    card = json.loads((mdir / "model.json").read_text())
    z, _ = latent.latents_for_seeds(seeds, card["latent_dim"], card["num_classes"])
    y = latent.one_hot(labels, card["num_classes"])
    (image,) = ReferenceEvaluator(onnx.load(mdir / "generator.onnx")).run(None, {"z": z, "y": y})
    return imaging.to_uint8(image)


def test_nearfree_has_the_shipped_signature_and_almost_no_arithmetic(nearfree_dir):
    shipped = json.loads((SHIPPED / "model.json").read_text())
    card = json.loads((nearfree_dir / "model.json").read_text())
    for key in ("kind", "latent_dim", "num_classes", "class_names", "image_shape"):
        assert card[key] == shipped[key], key
    model = onnx.load(nearfree_dir / "generator.onnx")
    onnx.checker.check_model(model, full_check=True)
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    assert weights["W"].shape == (2, 28 * 28)  # 2 multiply-adds per pixel: ~free
    assert len(model.graph.node) <= 6


def test_the_service_loads_the_nearfree_model_and_serves_its_images(nearfree_dir):
    from starlette.testclient import TestClient

    from service.app import create_app
    from service.settings import Settings

    settings = Settings(models_dir=nearfree_dir.parent, provider="cpu")
    with TestClient(create_app(settings)) as client:
        assert client.get("/readyz").status_code == 200
        r = client.post("/generate", json={"n": 4, "seed": 11, "labels": [0, 3, 7, 9]})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model"] == nearfree_dir.name
        got = np.stack(
            [np.asarray(Image.open(io.BytesIO(base64.b64decode(i["image"])))) for i in body["images"]]
        )
    want = _expected(nearfree_dir, range(11, 15), [0, 3, 7, 9])[..., 0]
    assert got.shape == (4, 28, 28)
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1  # float rounding at most
    assert len({g.tobytes() for g in got}) == 4  # the seed and label move the image


def test_inproc_work_is_the_services_work(nearfree_dir):
    card = json.loads((nearfree_dir / "model.json").read_text())
    calls = []

    def run(outputs, feeds):
        calls.append(feeds)
        return ReferenceEvaluator(onnx.load(nearfree_dir / "generator.onnx")).run(outputs, feeds)

    png = inproc.work_fn("png", card, run, 3)
    assert png() == 3 and png() == 3
    assert inproc.work_fn("raw", card, run, 3)() == 3
    first, second, raw = calls
    np.testing.assert_array_equal(raw["z"], first["z"])
    z, drawn = latent.latents_for_seeds(range(3), card["latent_dim"], card["num_classes"])
    np.testing.assert_array_equal(first["z"], z)  # per-seed z, labels drawn from the seeds
    np.testing.assert_array_equal(first["y"], latent.one_hot(drawn, card["num_classes"]))
    assert not np.array_equal(second["z"], first["z"])  # the next call moves on to new seeds

    arr = np.load(io.BytesIO(inproc.npy_bytes(np.zeros((5, 1, 28, 28), np.float32))), allow_pickle=False)
    assert arr.dtype == np.uint8 and arr.shape == (5, 28, 28) and (arr == 128).all()
    rgb = np.load(io.BytesIO(inproc.npy_bytes(np.ones((2, 3, 4, 6), np.float32))), allow_pickle=False)
    assert rgb.shape == (2, 4, 6, 3) and (rgb == 255).all()


def test_inproc_measure_reports_both_layouts(nearfree_dir):
    ref = inproc.measure(
        nearfree_dir, kinds=("raw",), batches=(1, 4), seconds=0.05, repeats=1, log=lambda m: None
    )
    assert ref["model"] == nearfree_dir.name and ref["batches"] == [1, 4]
    assert set(ref["images_per_s"]) == {f"raw_1x{__import__('os').cpu_count()}", "raw_2x1"}
    for line, pts in ref["images_per_s"].items():
        assert set(pts) == {"1", "4"} and all(v > 0 for v in pts.values()), line
        assert all(v > 0 for v in ref["per_cpu_s"][line].values())
