"""A near-free generator: a shipped model's inputs and outputs, almost no arithmetic.

Why: on a GPU, ONNX Runtime's time per image is tiny and the service's own host work (z from one
seed per image, PNG or `.npy`, HTTP) sets the ceiling (BENCHMARKS_GPU.md: 3% of bare CUDA ONNX
Runtime). With this model ONNX Runtime costs about a microsecond per image on the CPU, so a service
run against it measures that host work alone, on any machine, without a GPU.

The graph reads one coordinate of `z` (and of `y` for a conditional model), so every input is used
and the output moves with the seed, and paints a ring on a dark background (compresses like an
MNIST digit):

    image = Reshape(Tanh(Gemm(Concat(z[:, :1], y[:, :1]), W [k, C*H*W], b [C*H*W])), [-1, C, H, W])

`make_model_dir(root, like=models/mnist-cdcgan)` writes a complete model directory (generator
only: the card contract needs no more) that the service loads like any other.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from modelformat import sha256_file

OPSET = 17
IR_VERSION = 9  # the one tests/modelkit.py writes: every ONNX Runtime this project uses reads it


def _ring(image_shape: list[int]) -> np.ndarray:
    """Pre-activation pixels: +3 on a ring (white after tanh), -3 elsewhere (black)."""
    c, h, w = image_shape
    yy, xx = np.mgrid[0:h, 0:w]
    r = np.hypot(yy - (h - 1) / 2, xx - (w - 1) / 2)
    ring = np.abs(r - 0.3 * min(h, w)) < max(1.0, 0.07 * min(h, w))
    return np.broadcast_to(np.where(ring, 3.0, -3.0), (c, h, w)).reshape(-1).astype(np.float32)


def generator_graph(latent_dim: int, num_classes: int, image_shape: list[int]):
    """The ONNX ModelProto of the near-free generator (`num_classes` 0: unconditional)."""
    from onnx import TensorProto, helper, numpy_helper  # only the bench builds models

    c, h, w = image_shape
    d = c * h * w
    inputs = [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", latent_dim])]
    one = numpy_helper.from_array(np.array([1], np.int64), "one")
    zero = numpy_helper.from_array(np.array([0], np.int64), "zero")
    nodes = [helper.make_node("Slice", ["z", "zero", "one", "one"], ["z0"])]  # z[:, :1]
    k, x = 1, "z0"
    if num_classes:
        inputs.append(helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", num_classes]))
        nodes += [
            helper.make_node("Slice", ["y", "zero", "one", "one"], ["y0"]),
            helper.make_node("Concat", ["z0", "y0"], ["zy"], axis=1),
        ]
        k, x = 2, "zy"
    rng = np.random.default_rng(0)
    inits = [
        one,
        zero,
        numpy_helper.from_array((rng.standard_normal((k, d)) * 0.3).astype(np.float32), "W"),
        numpy_helper.from_array(_ring(image_shape), "b"),
        numpy_helper.from_array(np.array([-1, c, h, w], np.int64), "shape"),
    ]
    nodes += [
        helper.make_node("Gemm", [x, "W", "b"], ["g"]),  # [N, k] x [k, C*H*W]: k MACs per pixel
        helper.make_node("Tanh", ["g"], ["t"]),
        helper.make_node("Reshape", ["t", "shape"], ["image"]),
    ]
    out = [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", c, h, w])]
    graph = helper.make_graph(nodes, "nearfree_generator", inputs, out, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    return model


def make_model_dir(root: Path, like: Path, name: str | None = None) -> Path:
    """Write `root/<name>/` (default `<like's name>-nearfree`): generator.onnx and model.json with
    the inputs, outputs, classes and image shape of the model directory `like`."""
    import onnx

    src = json.loads((Path(like) / "model.json").read_text())
    name = name or f"{src['name']}-nearfree"
    conditional = src["kind"] == "conditional"
    k = src["num_classes"] if conditional else 0
    model = generator_graph(src["latent_dim"], k, src["image_shape"])
    onnx.checker.check_model(model)
    mdir = Path(root) / name
    mdir.mkdir(parents=True, exist_ok=True)
    onnx.save(model, mdir / "generator.onnx")
    card = {
        "format_version": src.get("format_version", 1),
        "name": name,
        "version": "0.0.1",
        "description": f"near-free stand-in for {src['name']} (bench/nearfree.py): same inputs and "
        "outputs, ~no arithmetic; measures the service's host work",
        "kind": src["kind"],
        "latent_dim": src["latent_dim"],
        "num_classes": src["num_classes"],
        "class_names": src["class_names"],
        "image_shape": src["image_shape"],
        "value_range": src.get("value_range", [-1.0, 1.0]),
        "files": {"generator": "generator.onnx"},
        "checksums": {"generator.onnx": sha256_file(mdir / "generator.onnx")},
        "training": {"dataset": "none (bench/nearfree.py)", "seed": 0},
        "evaluation": {},
    }
    (mdir / "model.json").write_text(json.dumps(card, indent=2))
    return mdir
