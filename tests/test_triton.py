"""`python -m service.triton`: a Triton model repository from ganserve's model directories.

Every config.pbtxt is parsed with Triton's own schema (tritonclient's `model_config_pb2.ModelConfig`
through `google.protobuf.text_format`, which rejects unknown fields) and every field is checked
against the copied ONNX file, read with the `onnx` package (not the exporter's ONNX Runtime), for
every shipped model. The copies then run in ONNX Runtime at Triton's largest batch with the shapes
the config declares. No Triton server runs here.
"""

from __future__ import annotations

import base64
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from modelkit import make_model_dir, read_card, write_card
from PIL import Image

from modelformat import sha256_file
from service.settings import Settings
from service.triton import main

model_config_pb2 = pytest.importorskip(
    "tritonclient.grpc.model_config_pb2", reason="tritonclient[grpc] (Triton's model config schema) missing"
)
text_format = pytest.importorskip("google.protobuf.text_format")

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "models"
SHIPPED_MODELS = sorted(p.name for p in SHIPPED.iterdir() if (p / "model.json").is_file())
NETWORKS = {"generator": "", "discriminator": "-discriminator", "classifier": "-classifier"}


def parse_config(path: Path):
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def triton_type(elem_type: int) -> int:
    """ONNX element type -> Triton DataType, through numpy's name (FLOAT -> float32 -> TYPE_FP32)."""
    np_name = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type)).name
    names = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "float64": "TYPE_FP64", "int64": "TYPE_INT64",
             "int32": "TYPE_INT32", "uint8": "TYPE_UINT8", "bool": "TYPE_BOOL"}  # fmt: skip
    return model_config_pb2.DataType.Value(names[np_name])


def graph_tensors(values) -> list[tuple[str, int, list[int]]]:
    """(name, Triton type, shape with -1 for a symbolic or unknown axis) from ONNX value infos."""
    out = []
    for v in values:
        t = v.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
        out.append((v.name, triton_type(t.elem_type), dims))
    return out


def check_against_onnx(config, graph_shapes: list[tuple[str, int, list[int]]], declared) -> None:
    """Triton's view of each tensor is the graph's: same names in order, types, and dims without
    the (dynamic) batch axis; a batch-only tensor is [1] reshaped to []."""
    assert [t.name for t in declared] == [name for name, _, _ in graph_shapes]
    for t, (name, dtype, dims) in zip(declared, graph_shapes, strict=True):
        assert t.data_type == dtype, name
        assert dims[0] == -1, f"{name}: the graph's batch axis must be dynamic"
        if dims[1:]:
            assert list(t.dims) == dims[1:], name
            assert not t.HasField("reshape"), name
        else:
            assert list(t.dims) == [1] and t.HasField("reshape") and list(t.reshape.shape) == [], name


@pytest.fixture(scope="module")
def repository(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("triton") / "repo"
    assert main([str(SHIPPED), str(out)]) == 0
    return out


def test_exports_every_network_of_every_shipped_model(repository):
    assert SHIPPED_MODELS, "no shipped models found"
    expected = {m + suffix for m in SHIPPED_MODELS for suffix in NETWORKS.values()}
    assert {p.name for p in repository.iterdir()} == expected


@pytest.mark.parametrize("model", SHIPPED_MODELS)
@pytest.mark.parametrize("network", NETWORKS)
def test_config_matches_the_onnx_file(repository, model, network):
    settings = Settings()
    folder = repository / (model + NETWORKS[network])
    config = parse_config(folder / "config.pbtxt")
    onnx_path = folder / "1" / "model.onnx"
    graph = onnx.load(onnx_path)
    onnx.checker.check_model(graph)

    assert config.name == folder.name
    assert config.backend == "onnxruntime"
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == ["1"]
    # batching from ganserve's batcher settings
    assert config.max_batch_size == settings.max_batch_size
    assert config.dynamic_batching.max_queue_delay_microseconds == round(settings.max_queue_delay_ms * 1000)
    (group,) = config.instance_group
    assert group.kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    assert group.count == settings.inference_threads
    assert config.parameters["intra_op_thread_count"].string_value == str(settings.intra_op_threads)
    # tensors: the graph's (initializers are not inputs)
    initializers = {i.name for i in graph.graph.initializer}
    check_against_onnx(
        config, graph_tensors(i for i in graph.graph.input if i.name not in initializers), config.input
    )
    check_against_onnx(config, graph_tensors(graph.graph.output), config.output)
    # a copy of the file the model card vouches for, not a link to it
    card = read_card(SHIPPED / model)
    source = SHIPPED / model / card["files"][network]
    assert not onnx_path.is_symlink() and not os.path.samefile(onnx_path, source)
    assert sha256_file(onnx_path) == card["checksums"][source.name]
    # class names for Triton's classification extension, on the classifier's logits only
    labelled = [t.name for t in config.output if t.label_filename]
    if network == "classifier":
        assert labelled == ["logits"]
        assert (folder / "labels.txt").read_text().splitlines() == card["class_names"]
    else:
        assert labelled == []


@pytest.mark.parametrize("model", SHIPPED_MODELS)
@pytest.mark.parametrize("network", NETWORKS)
def test_copy_runs_at_tritons_largest_batch(repository, model, network):
    """What Triton would send (max_batch_size rows of the declared dims, reshaped) runs, and the
    outputs come back with the declared dims."""
    folder = repository / (model + NETWORKS[network])
    config = parse_config(folder / "config.pbtxt")
    session = ort.InferenceSession(str(folder / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    n = config.max_batch_size

    def model_shape(t) -> list[int]:
        return [n, *(t.reshape.shape if t.HasField("reshape") else t.dims)]

    feeds = {t.name: np.zeros(model_shape(t), np.float32) for t in config.input}
    results = session.run([t.name for t in config.output], feeds)
    for t, value in zip(config.output, results, strict=True):
        assert list(value.shape) == model_shape(t), t.name


def test_triton_copy_with_the_latent_rule_draws_what_generate_draws(repository, make_settings):
    """A Triton client that samples z with the contract's rule gets /generate's images: the copy,
    fed as docs/DEPLOY.md's snippet feeds it, against the real app's PNGs, pixel for pixel."""
    from starlette.testclient import TestClient

    from modelformat import latents_for_seeds, one_hot
    from service.app import create_app
    from service.imaging import to_uint8

    seeds, labels = [1, 2, 3], [7, 7, 3]
    folder = repository / "mnist-cdcgan"
    config = parse_config(folder / "config.pbtxt")
    (z_dims,) = [list(t.dims) for t in config.input if t.name == "z"]
    (y_dims,) = [list(t.dims) for t in config.input if t.name == "y"]
    z, _ = latents_for_seeds(seeds, z_dims[0], y_dims[0])
    session = ort.InferenceSession(str(folder / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    (images,) = session.run(["image"], {"z": z, "y": one_hot(labels, y_dims[0])})
    expected = to_uint8(images)[..., 0]
    settings = make_settings(models_dir=SHIPPED, default_model="mnist-cdcgan")
    with TestClient(create_app(settings)) as client:
        r = client.post("/generate", json={"model": "mnist-cdcgan", "seeds": seeds, "labels": labels})
    assert r.status_code == 200, r.text
    for row, item in zip(expected, r.json()["images"], strict=True):
        png = np.asarray(Image.open(io.BytesIO(base64.b64decode(item["image"]))))
        assert np.array_equal(png, row)


def test_gpu_instances_and_settings_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("GANSERVE_MAX_BATCH_SIZE", "128")
    monkeypatch.setenv("GANSERVE_MAX_QUEUE_DELAY_MS", "2.5")
    monkeypatch.setenv("GANSERVE_INFERENCE_THREADS", "3")
    monkeypatch.setenv("GANSERVE_INTRA_OP_THREADS", "0")
    make_model_dir(tmp_path / "models", "tiny-cgan")
    out = tmp_path / "repo"
    assert main([str(tmp_path / "models"), str(out), "--device", "gpu", "--gpus", "0,1"]) == 0
    for folder in out.iterdir():
        config = parse_config(folder / "config.pbtxt")
        assert config.max_batch_size == 128
        assert config.dynamic_batching.max_queue_delay_microseconds == 2500
        (group,) = config.instance_group
        assert group.kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
        assert (group.count, list(group.gpus)) == (3, [0, 1])
        assert "intra_op_thread_count" not in config.parameters  # 0: ONNX Runtime's default


def test_versioned_layout_keeps_its_versions(tmp_path):
    """models/<name>/<N>/ (Triton's layout) -> OUT/<name>/<N>/model.onnx, one config per model."""
    root = tmp_path / "models"
    for version, seed in (("1", 0), ("3", 1)):
        d = make_model_dir(root / "tiny", version, seed=seed)
        card = read_card(d)
        card["name"] = "tiny"  # the card names the model, the folder its version
        write_card(d, card)
    out = tmp_path / "repo"
    assert main([str(root), str(out), "--networks", "generator"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["tiny"]
    assert sorted(p.name for p in (out / "tiny").iterdir()) == ["1", "3", "config.pbtxt"]
    for version in ("1", "3"):
        assert sha256_file(out / "tiny" / version / "model.onnx") == sha256_file(
            root / "tiny" / version / "generator.onnx"
        )
    assert parse_config(out / "tiny" / "config.pbtxt").name == "tiny"


def test_refuses_to_overwrite_and_leaves_out_alone_on_a_bad_model(tmp_path, capsys):
    root = tmp_path / "models"
    make_model_dir(root, "tiny-cgan")
    out = tmp_path / "repo"
    assert main([str(root), str(out)]) == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert main([str(root), str(out)]) == 1
    assert "already exist" in capsys.readouterr().err
    # a tampered file: the card's checksum catches it, and nothing in OUT changes
    make_model_dir(root, "tiny-gan", conditional=False)
    with (root / "tiny-gan" / "generator.onnx").open("ab") as f:
        f.write(b"\0")
    assert main([str(root), str(out), "--force"]) == 1
    err = capsys.readouterr().err
    assert "tiny-gan/generator.onnx: checksum mismatch" in err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no staging left behind
    # --force replaces once every model is good
    (root / "tiny-gan" / "generator.onnx").unlink()
    make_model_dir(root, "tiny-gan", conditional=False)
    assert main([str(root), str(out), "--force"]) == 0
    assert {p.name for p in out.iterdir()} >= {"tiny-cgan", "tiny-gan", "tiny-gan-classifier"}


def test_bad_flags_are_usage_errors(tmp_path, capsys):
    make_model_dir(tmp_path / "models", "tiny-cgan")
    for argv, message in (
        (["--networks", "generator,encoder"], "encoder"),
        (["--gpus", "0"], "--gpus needs --device gpu"),
        (["--device", "gpu", "--gpus", "zero"], "not a comma-separated list"),
        (["--version", "0"], "--version must be >= 1"),
    ):
        with pytest.raises(SystemExit) as exc:
            main([str(tmp_path / "models"), str(tmp_path / "repo"), *argv])
        assert exc.value.code == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "repo").exists()


def test_command_line_help_and_no_onnx_or_torch_import():
    code = (
        "import sys, service.triton; "
        "bad = [m for m in ('onnx', 'torch') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=60)
    proc = subprocess.run(
        [sys.executable, "-m", "service.triton", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert proc.returncode == 0
    assert "GANSERVE_MAX_BATCH_SIZE" in proc.stdout and "--device" in proc.stdout
