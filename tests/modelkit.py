"""Tiny model directories that follow docs/MODEL_FORMAT.md, built without torch.

Why: the service's tests (and the SDK, reliability, docker and web tests) need real ONNX Runtime
sessions that load in milliseconds, long before (and independently of) the trained models in
`models/`. Each network is a few `onnx.helper` nodes (z @ W -> Tanh -> Reshape), so every file
obeys the contract (names, shapes, dynamic batch axis, checksums) while staying a few kilobytes.

Public helpers (keep stable, other test files import them):
- `make_model_dir(root, name, ...) -> Path`: writes `root/name/` with generator, discriminator,
  classifier ONNX files, reference_stats.npz, samples.png and model.json with correct checksums.
- `sha256_file(path) -> str` ("sha256:<hex>", modelformat's) and `refresh_checksums(model_dir)`:
  re-hash after a test tampers with a file on purpose (to test something other than the checksum).
- `read_card(model_dir)` / `write_card(model_dir, card)`: model.json as a plain dict, so tests can
  break it on purpose (valid cards are written through `modelformat.ModelCard`).
- `reference_images(model_dir, seeds, labels=None)`: the generator's output computed in numpy
  (not ONNX Runtime), float32 [N, C, H, W] in [-1, 1], for checking the service's pixels.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import modelformat
from modelformat import ModelCard, latents_for_seeds, one_hot, sha256_file
from modelformat.metrics import save_reference_stats
from modelformat.signatures import FEATURES, IMAGE, LOGIT, LOGITS, Y, Z

OPSET = 17
IR_VERSION = 9  # ONNX Runtime 1.31 reads it; newer IR versions buy nothing for these graphs
FEATURE_WIDTH = 6  # classifier feature width (F)


def read_card(model_dir: str | Path) -> dict:
    return json.loads((Path(model_dir) / "model.json").read_text())


def write_card(model_dir: str | Path, card: dict) -> None:
    (Path(model_dir) / "model.json").write_text(json.dumps(card, indent=2))


def refresh_checksums(model_dir: str | Path) -> None:
    model_dir = Path(model_dir)
    card = read_card(model_dir)
    card["checksums"] = {f: sha256_file(model_dir / f) for f in card["files"].values()}
    write_card(model_dir, card)


def _weights(model_dir: Path) -> dict[str, np.ndarray]:
    return dict(np.load(model_dir / "_weights.npz"))


def reference_images(model_dir: str | Path, seeds, labels=None) -> np.ndarray:
    """The generator in numpy for latents from `seeds` (the contract's latent rule)."""
    model_dir = Path(model_dir)
    card = read_card(model_dir)
    w = _weights(model_dir)
    z, _ = latents_for_seeds(seeds, card["latent_dim"])
    h = z
    if card["kind"] == "conditional":
        h = np.concatenate([z, one_hot(labels, card["num_classes"])], axis=1)
    out = np.tanh(h @ w["g_w"] + w["g_b"])
    return out.reshape(len(seeds), *card["image_shape"])


def _save(graph: onnx.GraphProto, path: Path) -> None:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    onnx.save(model, path)


def _const(name: str, value: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(value, name=name)


def _generator(latent_dim, num_classes, image_shape, w, b) -> onnx.GraphProto:
    c, h, wd = image_shape
    inputs = [helper.make_tensor_value_info(Z, TensorProto.FLOAT, ["N", latent_dim])]
    nodes = []
    x = Z
    if num_classes:
        inputs.append(helper.make_tensor_value_info(Y, TensorProto.FLOAT, ["N", num_classes]))
        nodes.append(helper.make_node("Concat", [Z, Y], ["zy"], axis=1))
        x = "zy"
    nodes += [
        helper.make_node("MatMul", [x, "W"], ["h"]),
        helper.make_node("Add", ["h", "b"], ["hb"]),
        helper.make_node("Tanh", ["hb"], ["t"]),
        helper.make_node("Reshape", ["t", "shape"], [IMAGE]),
    ]
    inits = [_const("W", w), _const("b", b), _const("shape", np.array([-1, c, h, wd], dtype=np.int64))]
    out = [helper.make_tensor_value_info(IMAGE, TensorProto.FLOAT, ["N", c, h, wd])]
    return helper.make_graph(nodes, "generator", inputs, out, inits)


def _discriminator(num_classes, image_shape, w) -> onnx.GraphProto:
    inputs = [helper.make_tensor_value_info(IMAGE, TensorProto.FLOAT, ["N", *image_shape])]
    nodes = [helper.make_node("Flatten", [IMAGE], ["flat"], axis=1)]
    x = "flat"
    if num_classes:
        inputs.append(helper.make_tensor_value_info(Y, TensorProto.FLOAT, ["N", num_classes]))
        nodes.append(helper.make_node("Concat", ["flat", Y], ["fy"], axis=1))
        x = "fy"
    nodes += [
        helper.make_node("MatMul", [x, "W"], ["l2"]),
        helper.make_node("Reshape", ["l2", "shape"], [LOGIT]),
    ]
    inits = [_const("W", w), _const("shape", np.array([-1], dtype=np.int64))]
    out = [helper.make_tensor_value_info(LOGIT, TensorProto.FLOAT, ["N"])]
    return helper.make_graph(nodes, "discriminator", inputs, out, inits)


def _classifier(image_shape, wf, wl) -> onnx.GraphProto:
    inputs = [helper.make_tensor_value_info(IMAGE, TensorProto.FLOAT, ["N", *image_shape])]
    nodes = [
        helper.make_node("Flatten", [IMAGE], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "Wf"], ["f0"]),
        helper.make_node("Tanh", ["f0"], [FEATURES]),
        helper.make_node("MatMul", [FEATURES, "Wl"], [LOGITS]),
    ]
    inits = [_const("Wf", wf), _const("Wl", wl)]
    out = [
        helper.make_tensor_value_info(LOGITS, TensorProto.FLOAT, ["N", wl.shape[1]]),
        helper.make_tensor_value_info(FEATURES, TensorProto.FLOAT, ["N", wf.shape[1]]),
    ]
    return helper.make_graph(nodes, "classifier", inputs, out, inits)


def make_model_dir(
    root: str | Path,
    name: str,
    conditional: bool = True,
    latent_dim: int = 8,
    num_classes: int = 3,
    image_shape: tuple[int, int, int] = (1, 8, 8),
    with_discriminator: bool = True,
    with_classifier: bool = True,
    seed: int = 0,
) -> Path:
    """Write a complete, valid model directory `root/name` and return its path.

    `num_classes` is the number of data classes (`class_names`); the generator takes `y` of that
    width only when `conditional`. Weights come from `seed`, so two calls give identical files.
    """
    model_dir = Path(root) / name
    model_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    c, h, w = image_shape
    d = c * h * w
    k_in = num_classes if conditional else 0
    g_w = (rng.standard_normal((latent_dim + k_in, d)) * 0.6).astype(np.float32)
    g_b = (rng.standard_normal(d) * 0.1).astype(np.float32)
    files = {"generator": "generator.onnx"}
    _save(_generator(latent_dim, k_in, image_shape, g_w, g_b), model_dir / "generator.onnx")
    if with_discriminator:
        d_w = (rng.standard_normal((d + k_in, 1)) * 0.2).astype(np.float32)
        _save(_discriminator(k_in, image_shape, d_w), model_dir / "discriminator.onnx")
        files["discriminator"] = "discriminator.onnx"
    if with_classifier:
        wf = (rng.standard_normal((d, FEATURE_WIDTH)) * 0.3).astype(np.float32)
        wl = (rng.standard_normal((FEATURE_WIDTH, num_classes)) * 1.0).astype(np.float32)
        _save(_classifier(image_shape, wf, wl), model_dir / "classifier.onnx")
        files["classifier"] = "classifier.onnx"
        # "Real data" for the reference statistics: the generator's own samples in numpy.
        z = rng.standard_normal((256, latent_dim)).astype(np.float32)
        if conditional:
            y = np.eye(num_classes, dtype=np.float32)[rng.integers(num_classes, size=256)]
            z = np.concatenate([z, y], axis=1)
        feats = np.tanh(np.tanh(z @ g_w + g_b) @ wf)
        save_reference_stats(model_dir / "reference_stats.npz", feats)
        files["reference_stats"] = "reference_stats.npz"
    # Not part of the contract: the weights, so `reference_images` can recompute the generator.
    np.savez(model_dir / "_weights.npz", g_w=g_w, g_b=g_b)
    card = ModelCard(
        format_version=1,
        name=name,
        version="0.0.1",
        description=f"tiny {'conditional' if conditional else 'unconditional'} test generator",
        kind="conditional" if conditional else "unconditional",
        latent_dim=latent_dim,
        num_classes=num_classes if conditional else 0,
        class_names=[str(i) for i in range(num_classes)],
        image_shape=image_shape,
        files=files,
        training={"dataset": "none (tests/modelkit.py)", "seed": seed},
    )
    modelformat.write_card(model_dir, card)
    return model_dir
