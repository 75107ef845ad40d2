"""The service's pure parts: latents, imaging, scoring, settings and the model-directory checks."""

from __future__ import annotations

import base64
import io
import json
import shutil

import numpy as np
import pytest
from modelkit import make_model_dir, read_card, refresh_checksums, write_card
from PIL import Image

from service import imaging, latent, scoring
from service.errors import InvalidInput
from service.registry import Registry, valid_name
from service.settings import DEFAULT_MODELS_DIR, Settings

# --- latent ------------------------------------------------------------------------------------


def test_seeded_latent_follows_the_contract_rule():
    z, label = latent.seeded(42, 16, num_classes=10)
    rng = np.random.default_rng(42)
    np.testing.assert_array_equal(z, rng.standard_normal(16).astype(np.float32))
    assert label == int(rng.integers(10))


def test_truncation_bounds_every_coordinate_and_is_deterministic():
    z1, _ = latent.seeded(7, 256, truncation=0.5)
    z2, _ = latent.seeded(7, 256, truncation=0.5)
    assert np.abs(z1).max() <= 0.5
    np.testing.assert_array_equal(z1, z2)
    untouched = np.abs(latent.seeded(7, 256)[0]) <= 0.5
    np.testing.assert_array_equal(z1[untouched], latent.seeded(7, 256)[0][untouched])


def test_slerp_and_lerp_end_points_and_walk_shape():
    a, b = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    np.testing.assert_allclose(latent.slerp(a, b, 0.0), a)
    np.testing.assert_allclose(latent.slerp(a, b, 1.0), b, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(latent.slerp(a, b, 0.5)), 1.0)
    np.testing.assert_allclose(latent.lerp(a, b, 0.25), [0.75, 0.25])
    zs, ys, ts = latent.walk(np.stack([a, b, a]), 4, "lerp", latent.one_hot([0, 2, 1], 3))
    assert zs.shape == (9, 2) and ys.shape == (9, 3) and ts[0] == 0 and ts[-1] == 1
    np.testing.assert_allclose(ys[2], [0.5, 0, 0.5])


def test_arithmetic_means_groups_and_neighbours_stay_within_the_noise():
    g1, g2 = np.array([[1.0, 1.0], [3.0, 3.0]]), np.array([[1.0, 0.0]])
    out = latent.combine([g1, g2], [1.0, -1.0])
    np.testing.assert_allclose(out, [1.0, 2.0])
    nb = latent.neighbours(out, 5, 0.25, seed=1)
    assert nb.shape == (5, 2) and np.abs(nb - out).max() <= 0.25


# --- imaging -----------------------------------------------------------------------------------


def test_png_round_trip_and_grid_shapes():
    x = np.linspace(-1, 1, 2 * 64, dtype=np.float32).reshape(2, 1, 8, 8)
    u8 = imaging.to_uint8(x)
    assert u8.shape == (2, 8, 8, 1) and u8.min() == 0 and u8.max() == 255
    back = imaging.decode_png(imaging.png_bytes(u8[0]), "img", (1, 8, 8), 1000)
    np.testing.assert_allclose(back, x[0], atol=1 / 127.5)
    assert imaging.grid(u8).shape == (12, 22, 1)
    assert Image.open(io.BytesIO(imaging.gif_bytes(u8))).n_frames == 2


@pytest.mark.parametrize("channels,mode", [(1, "L"), (2, "LA"), (3, "RGB"), (4, "RGBA")])
def test_png_encoder_is_lossless_for_every_channel_count(channels, mode):
    rng = np.random.default_rng(channels)
    img = rng.integers(0, 256, size=(7, 13, channels), dtype=np.uint8)  # odd sizes
    decoded = Image.open(io.BytesIO(imaging.png_bytes(img)))
    decoded.load()  # full decode: checks the CRCs and the zlib stream
    assert decoded.format == "PNG" and decoded.mode == mode and decoded.size == (13, 7)
    np.testing.assert_array_equal(np.asarray(decoded).reshape(7, 13, channels), img)


def test_png_b64_rows_match_single_image_encoding():
    x = np.random.default_rng(0).uniform(-1, 1, size=(5, 1, 28, 28)).astype(np.float32)
    rows = imaging.png_b64_rows(x)
    u8 = imaging.to_uint8(x)
    assert len(rows) == 5
    for i, s in enumerate(rows):
        data = base64.b64decode(s)
        assert data == imaging.png_bytes(u8[i])
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(data))), u8[i, :, :, 0])


def test_decode_rejects_bombs_wrong_sizes_and_non_png():
    big = io.BytesIO()
    Image.new("L", (4000, 4000)).save(big, "PNG")
    with pytest.raises(InvalidInput, match="exceeds the limit"):
        imaging.decode_png(big.getvalue(), "images[0]", (1, 8, 8), 10_000)
    small = io.BytesIO()
    Image.new("L", (9, 8)).save(small, "PNG")
    with pytest.raises(InvalidInput, match="needs 8x8"):
        imaging.decode_png(small.getvalue(), "images[0]", (1, 8, 8), 10_000)
    jpg = io.BytesIO()
    Image.new("L", (8, 8)).save(jpg, "JPEG")
    with pytest.raises(InvalidInput, match="expected a PNG"):
        imaging.decode_png(jpg.getvalue(), "images[0]", (1, 8, 8), 10_000)
    with pytest.raises(InvalidInput, match="not a readable image"):
        imaging.decode_png(b"hello", "images[0]", (1, 8, 8), 10_000)
    with pytest.raises(InvalidInput, match="base64"):
        imaging.b64decode("***", "images[0]")


# --- scoring -----------------------------------------------------------------------------------


def test_scoring_math():
    assert scoring.sigmoid(np.array([0.0]))[0] == 0.5
    assert np.isfinite(scoring.sigmoid(np.array([-1e4, 1e4]))).all()
    assert scoring.inception_score(np.eye(4)) == pytest.approx(4.0, rel=1e-6)
    assert scoring.inception_score(np.full((5, 4), 0.25)) == pytest.approx(1.0)
    f = np.random.default_rng(0).standard_normal((2000, 3))
    mu, s = scoring.feature_stats(f)
    assert scoring.frechet_distance(mu, s, mu, s) == pytest.approx(0.0, abs=1e-6)
    assert scoring.frechet_distance(mu + 1, s, mu, s) == pytest.approx(3.0, rel=1e-3)
    assert scoring.fid_warning(5) and scoring.fid_warning(1) and scoring.fid_warning(5000) is None


# --- settings ----------------------------------------------------------------------------------


def test_settings_read_the_environment_and_default_to_the_repository_models(monkeypatch):
    assert DEFAULT_MODELS_DIR.name == "models" and (DEFAULT_MODELS_DIR.parent / "service").is_dir()
    monkeypatch.setenv("GANSERVE_MAX_BATCH_SIZE", "32")
    monkeypatch.setenv("GANSERVE_MODELS_DIR", "/tmp/x")
    s = Settings()
    assert s.max_batch_size == 32 and str(s.models_dir) == "/tmp/x"
    with pytest.raises(ValueError):
        Settings(no_such_setting=1)


# --- registry: the model-directory contract ----------------------------------------------------


def _load(root):
    reg = Registry(Settings(models_dir=root, warmup=True, provider="cpu"))
    reg.load_all()
    return reg


def test_model_names_are_plain_identifiers():
    assert valid_name("mnist-cdcgan") and valid_name("a.b_c-1")
    for bad in ("..", "../etc", "/abs", "a/b", ".hidden", "", "a" * 65, "a..b"):
        assert not valid_name(bad)


def test_missing_or_empty_models_dir_loads_nothing(tmp_path):
    reg = _load(tmp_path / "nope")
    assert reg.loaded and not reg.models and not reg.ready
    assert not _load(tmp_path).models


@pytest.mark.parametrize(
    "breakage, message",
    [
        ("checksum", "generator.onnx: checksum mismatch"),
        ("truncated", "generator.onnx: checksum mismatch"),
        ("truncated_rehashed", "generator.onnx: ONNX Runtime cannot load it"),
        ("missing_file", "discriminator.onnx: missing"),
        ("bad_json", "model.json: not valid JSON"),
        ("no_card", "model.json: missing"),
        ("latent_dim", "generator.onnx: input 'z' has shape"),
        ("signature", "generator.onnx: inputs"),
        ("name", "does not match the directory name"),
        ("path_in_files", "must be a plain file name"),
        ("kind", "field 'kind'"),
    ],
)
def test_a_bad_model_is_listed_as_failed_naming_the_file_and_the_others_load(tmp_path, breakage, message):
    make_model_dir(tmp_path, "good")
    bad = make_model_dir(tmp_path, "bad")
    card = read_card(bad)
    if breakage == "checksum":
        card["checksums"]["generator.onnx"] = "sha256:" + "0" * 64
        write_card(bad, card)
    elif breakage.startswith("truncated"):
        data = (bad / "generator.onnx").read_bytes()
        (bad / "generator.onnx").write_bytes(data[: len(data) // 2])
        if breakage == "truncated_rehashed":
            refresh_checksums(bad)
    elif breakage == "missing_file":
        (bad / "discriminator.onnx").unlink()
    elif breakage == "bad_json":
        (bad / "model.json").write_text("{not json")
    elif breakage == "no_card":
        (bad / "model.json").unlink()
    elif breakage == "latent_dim":
        card["latent_dim"] = 9
        write_card(bad, card)
    elif breakage == "signature":
        shutil.copy(make_model_dir(tmp_path / "other", "x", conditional=False) / "generator.onnx", bad)
        refresh_checksums(bad)
    elif breakage == "name":
        card["name"] = "other"
        write_card(bad, card)
    elif breakage == "path_in_files":
        card["files"]["generator"] = "../good/generator.onnx"
        write_card(bad, card)
    elif breakage == "kind":
        card["kind"] = "diffusion"
        write_card(bad, card)
    reg = _load(tmp_path)
    assert list(reg.models) == ["good"]
    assert message in reg.failed["bad"], reg.failed["bad"]
    assert not reg.ready


def test_optional_files_may_be_absent(tmp_path):
    make_model_dir(tmp_path, "bare", with_discriminator=False, with_classifier=False)
    reg = _load(tmp_path)
    m = reg.models["bare"]
    assert m.discriminator is None and m.classifier is None and m.reference is None
    assert m.provider == "CPUExecutionProvider"
    assert json.loads((tmp_path / "bare" / "model.json").read_text())["files"] == {
        "generator": "generator.onnx"
    }


def test_padded_runner_gives_every_call_one_shape_and_the_same_rows(model_root):
    import onnxruntime as ort

    from service.registry import _runner

    sess = ort.InferenceSession(
        str(model_root / "tiny-cgan" / "generator.onnx"), providers=["CPUExecutionProvider"]
    )
    shapes = []

    class Spy:  # the real session, recording the batch it is given
        def run(self, names, inputs):
            shapes.append(inputs["z"].shape[0])
            return sess.run(names, inputs)

    rng = np.random.default_rng(0)
    feeds = {"z": rng.standard_normal((3, 8)).astype(np.float32), "y": np.eye(3, dtype=np.float32)[[0, 1, 2]]}
    plain = _runner(Spy(), ["image"])(feeds)[0]
    padded = _runner(Spy(), ["image"], pad_to=8)(feeds)[0]
    full = _runner(Spy(), ["image"], pad_to=3)(feeds)[0]
    assert shapes == [3, 8, 3]
    assert padded.shape == plain.shape == full.shape and np.array_equal(padded, plain)


@pytest.mark.parametrize("name", ["mnist-cdcgan", "mnist-dcgan"])
def test_solo_session_threads_change_no_bit_of_a_shipped_model(name):
    """The solo session (more threads, for a call alone) must give the very same pixels, or an
    image would depend on whether its request happened to run alone."""
    from service.registry import _session

    model_dir = DEFAULT_MODELS_DIR / name
    card = json.loads((model_dir / "model.json").read_text())
    path = model_dir / card["files"]["generator"]
    settings = Settings(models_dir=DEFAULT_MODELS_DIR, intra_op_threads=1)
    one, solo = (
        _session(path, settings, ["CPUExecutionProvider"]),
        _session(path, settings, ["CPUExecutionProvider"], threads=4),
    )
    rng = np.random.default_rng(0)
    for rows in (1, 7, 64):
        feeds = {"z": rng.standard_normal((rows, card["latent_dim"])).astype(np.float32)}
        if card.get("num_classes"):
            feeds["y"] = np.eye(card["num_classes"], dtype=np.float32)[
                rng.integers(0, card["num_classes"], rows)
            ]
        assert np.array_equal(one.run(None, feeds)[0], solo.run(None, feeds)[0])


def test_runner_uses_the_solo_session_only_for_a_call_alone():
    import threading

    from service.registry import SOLO_MAX_ROWS, _runner

    entered, release, used = threading.Event(), threading.Event(), []

    class Session:
        def __init__(self, name, block=False):
            self.name, self.block = name, block

        def run(self, names, inputs):
            used.append(self.name)
            if self.block:
                entered.set()
                release.wait(5)
            return [inputs["z"]]

    run = _runner(Session("shared"), ["image"], solo=Session("solo", block=True))
    z = {"z": np.zeros((1, 2), np.float32)}
    first = threading.Thread(target=run, args=(z,))
    first.start()
    assert entered.wait(5)
    run(z)  # while the first call is in flight
    release.set()
    first.join(5)
    run(z)  # alone again
    run({"z": np.zeros((SOLO_MAX_ROWS + 1, 2), np.float32)})  # alone, but a batch that means load
    assert used == ["solo", "shared", "solo", "shared"]


def test_solo_session_only_where_it_adds_threads(monkeypatch):
    from service.registry import _solo_threads

    monkeypatch.setattr("os.cpu_count", lambda: 4)
    cpu = "CPUExecutionProvider"
    assert _solo_threads(Settings(), cpu) == 4
    assert _solo_threads(Settings(solo_intra_op_threads=3), cpu) == 3
    assert _solo_threads(Settings(solo_intra_op_threads=1), cpu) == 0  # off
    assert _solo_threads(Settings(intra_op_threads=4), cpu) == 0  # the shared session has them all
    assert _solo_threads(Settings(intra_op_threads=0), cpu) == 0  # ORT's default: every core
    assert _solo_threads(Settings(), "CUDAExecutionProvider") == 0
