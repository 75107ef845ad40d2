"""Export a small model directory, check it against the contract, and evaluate it from ONNX only."""

import hashlib
import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

from training.evaluate import evaluate, format_table, generate, write_evaluation
from training.export import export_model_dir
from training.models import Classifier, Discriminator, GANConfig, Generator


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    cfg = GANConfig(image_size=28, latent_dim=8, num_classes=3, ngf=8, ndf=8)
    out = tmp_path_factory.mktemp("models") / "tiny"
    card = export_model_dir(
        out,
        name="tiny",
        G=Generator(cfg),
        D=Discriminator(cfg),
        C=Classifier(28, 1, 3, feature_dim=6),
        class_names=["a", "b", "c"],
        reference_images=torch.rand(40, 1, 28, 28) * 2 - 1,
        training={"dataset": "fake", "epochs": 0},
    )
    return out, card


def test_directory_follows_the_contract(model_dir):
    out, card = model_dir
    assert sorted(p.name for p in out.iterdir()) == [
        "classifier.onnx",
        "discriminator.onnx",
        "generator.onnx",
        "model.json",
        "reference_stats.npz",
        "samples.png",
    ]  # no external .onnx.data files
    on_disk = json.loads((out / "model.json").read_text())
    assert on_disk["kind"] == "conditional" and on_disk["latent_dim"] == 8 and on_disk["num_classes"] == 3
    assert on_disk["image_shape"] == [1, 28, 28]
    for name, digest in on_disk["checksums"].items():
        assert digest == "sha256:" + hashlib.sha256((out / name).read_bytes()).hexdigest()
    assert max(card.training["onnx_parity_max_abs_diff"].values()) <= 1e-4
    assert on_disk["ganserve_version"] == card.ganserve_version and card.ganserve_version
    stats = np.load(out / "reference_stats.npz")
    assert stats["mu"].shape == (6,) and stats["sigma"].shape == (6, 6) and int(stats["n"]) == 40


def test_onnx_graphs_have_the_contract_names_and_a_dynamic_batch(model_dir):
    out, _ = model_dir
    g = ort.InferenceSession(str(out / "generator.onnx"))
    assert [i.name for i in g.get_inputs()] == ["z", "y"] and [o.name for o in g.get_outputs()] == ["image"]
    for n in (1, 5, 130):
        (image,) = g.run(
            None, {"z": np.zeros((n, 8), np.float32), "y": np.eye(3, dtype=np.float32)[np.arange(n) % 3]}
        )
        assert image.shape == (n, 1, 28, 28)
    d = ort.InferenceSession(str(out / "discriminator.onnx"))
    (logit,) = d.run(None, {"image": image, "y": np.eye(3, dtype=np.float32)[np.arange(130) % 3]})
    assert logit.shape == (130,)
    c = ort.InferenceSession(str(out / "classifier.onnx"))
    logits, features = c.run(["logits", "features"], {"image": image[:9]})
    assert logits.shape == (9, 3) and features.shape == (9, 6)


def test_generate_follows_the_latent_rule(model_dir):
    out, _ = model_dir
    images, labels = generate(out, 5)
    g = ort.InferenceSession(str(out / "generator.onnx"))
    z = np.random.default_rng(3).standard_normal(8).astype(np.float32)[None]
    (again,) = g.run(None, {"z": z, "y": np.eye(3, dtype=np.float32)[[labels[3]]]})
    np.testing.assert_allclose(images[3], again[0], atol=1e-6)


def test_evaluate_reports_metrics_with_real_baselines(model_dir):
    out, _ = model_dir
    rng = np.random.default_rng(0)
    real = rng.uniform(-1, 1, (60, 1, 28, 28)).astype(np.float32)
    labels = np.arange(60) % 3
    result = evaluate(out, real[:30], labels[:30], real[30:], labels[30:], n_samples=30, splits=3)
    assert result["samples"] == 30
    assert result["fid"]["model"] >= 0 and result["fid"]["real_baseline"] >= 0
    assert 1.0 <= result["inception_score"]["model"]["mean"] <= 3.0
    assert len(result["label_accuracy"]["model_per_label"]) == 3
    assert 0.0 <= result["label_accuracy"]["model"] <= 1.0
    assert 0.0 <= result["label_accuracy"]["real_heldout"] <= 1.0
    div = result["diversity"]
    assert len(div["model_per_class"]) == len(div["real_per_class"]) == len(div["heldout_per_class"]) == 3
    assert div["ratio_mean"] > 0 and div["heldout_ratio_mean"] > 0
    write_evaluation(out, result)
    assert json.loads((out / "model.json").read_text())["evaluation"]["fid"] == result["fid"]
    assert "FID" in format_table(result)
