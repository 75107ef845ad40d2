"""The contract package alone: the card's checks, signatures, the latent rule, its imports."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest
from modelkit import make_model_dir, refresh_checksums
from modelkit import read_card as read_raw
from modelkit import write_card as write_raw

from modelformat import ContractError, Signature, check_signature, read_card, verify_files
from modelformat.card import parse_card
from modelformat.latent import latents_for_seeds, seeded
from service.settings import DEFAULT_MODELS_DIR


def test_imports_neither_torch_nor_fastapi_nor_onnxruntime():
    code = (
        "import sys, modelformat, modelformat.metrics; "
        "print(sorted(m for m in ('torch', 'fastapi', 'onnxruntime', 'scipy') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=DEFAULT_MODELS_DIR.parent,
    )
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("name", ["mnist-cdcgan", "mnist-dcgan"])
def test_the_shipped_cards_load_and_their_files_match(name):
    card = read_card(DEFAULT_MODELS_DIR / name, name)
    assert card.name == name and card.ganserve_version  # the package version that exported it
    verify_files(DEFAULT_MODELS_DIR / name, card)
    text = (DEFAULT_MODELS_DIR / name / "model.json").read_text()
    assert json.loads(card.to_json()) == json.loads(text)  # nothing lost or added on a round trip


def _card(**change) -> dict:
    card = {
        "format_version": 1,
        "name": "m",
        "kind": "conditional",
        "latent_dim": 4,
        "num_classes": 2,
        "class_names": ["a", "b"],
        "image_shape": [1, 8, 8],
        "files": {"generator": "generator.onnx"},
    }
    return card | change


@pytest.mark.parametrize(
    "change, message",
    [
        ({"latent_dim": 0}, "field 'latent_dim' = 0 is invalid: Input should be greater than or equal to 1"),
        ({"latent_dim": True}, "field 'latent_dim' = True is invalid"),
        ({"latent_dim": "4"}, "field 'latent_dim' = '4' is invalid"),
        ({"kind": "diffusion"}, "field 'kind' = 'diffusion' is invalid"),
        ({"format_version": 2}, "field 'format_version' = 2 is invalid (this code reads format_version 1)"),
        (
            {"image_shape": [2, 8, 8]},
            "field 'image_shape' = [2, 8, 8] is invalid: [2, 8, 8] must have 1 or 3",
        ),
        ({"image_shape": [1, 8]}, "missing field 'image_shape[2]'"),
        ({"image_shape": [1, 0, 8]}, "field 'image_shape[1]' = 0 is invalid"),
        ({"files": {"generator": "../x.onnx"}}, "field 'files.generator'"),
        (
            {"files": {"generator": "g.onnx", "weights": "w.bin"}},
            "field 'files.weights' = 'weights' is invalid",
        ),
        ({"files": {"classifier": "c.onnx"}}, "files.generator is required"),
        ({"name": "../etc"}, "field 'name' = '../etc' is invalid: '../etc' is not a plain identifier"),
        ({"class_names": ["a"]}, "len(class_names) == num_classes"),
        ({"kind": "unconditional"}, "an unconditional model must have num_classes 0"),
        ({"checksums": {"generator.onnx": "md5:00"}}, "field 'checksums.generator.onnx'"),
        ({"descripton": "typo"}, "field 'descripton' = 'typo' is invalid: Extra inputs are not permitted"),
    ],
)
def test_a_bad_card_is_refused_naming_the_field(change, message):
    with pytest.raises(ContractError) as err:
        parse_card(json.dumps(_card(**change)), "m/model.json")
    assert str(err.value).startswith("m/model.json: ")
    assert message in str(err.value)


def test_a_missing_field_is_named_and_optional_fields_have_defaults():
    card = _card()
    del card["latent_dim"]
    with pytest.raises(ContractError, match="m/model.json: missing field 'latent_dim'"):
        parse_card(json.dumps(card), "m/model.json")
    card = parse_card(json.dumps(_card()))
    assert card.version is None and card.ganserve_version is None and card.value_range == (-1.0, 1.0)
    assert "version" not in json.loads(card.to_json())


def test_not_json_or_not_an_object_is_refused():
    with pytest.raises(ContractError, match="not valid JSON"):
        parse_card("{", "x/model.json")
    with pytest.raises(ContractError, match="must be a JSON object"):
        parse_card("[1]", "x/model.json")


def test_the_name_must_be_the_one_the_layout_gives_but_may_sit_in_a_version_folder(tmp_path):
    flat = make_model_dir(tmp_path, "tiny")
    assert read_card(flat, "tiny").name == "tiny"
    with pytest.raises(ContractError, match="name 'tiny' does not match the directory name 'other'"):
        read_card(flat, "other")
    versioned = make_model_dir(tmp_path / "tiny2", "1")  # models/<name>/<version>/ ...
    card = read_raw(versioned)
    card["name"] = "tiny2"  # ... whose card carries the model's name, not the folder's
    write_raw(versioned, card)
    assert read_card(versioned, "tiny2").name == "tiny2"
    with pytest.raises(ContractError, match="tiny2/1/model.json: name 'tiny2' does not match"):
        read_card(versioned, "tiny3")


def test_checksums_are_verified_per_listed_file(tmp_path):
    d = make_model_dir(tmp_path, "tiny")
    verify_files(d, read_card(d))
    (d / "classifier.onnx").write_bytes(b"x")
    with pytest.raises(ContractError, match="tiny/classifier.onnx: checksum mismatch"):
        verify_files(d, read_card(d))
    refresh_checksums(d)
    card = read_raw(d)
    del card["checksums"]["generator.onnx"]
    write_raw(d, card)
    with pytest.raises(ContractError, match="no checksum for generator.onnx"):
        verify_files(d, read_card(d))


def test_write_card_stamps_checksums_and_the_package_version(tmp_path):
    d = make_model_dir(tmp_path, "tiny", conditional=False)
    card = read_card(d)
    assert card.ganserve_version and set(card.checksums) == set(card.files.values())
    assert card.checksums["generator.onnx"].startswith("sha256:")


# --- signatures --------------------------------------------------------------------------------


def test_a_session_is_checked_against_the_card_signature(tmp_path):
    cond = read_card(make_model_dir(tmp_path, "c"))
    sess = ort.InferenceSession(str(tmp_path / "c" / "generator.onnx"), providers=["CPUExecutionProvider"])
    got = Signature.of_session(sess)
    assert [(t.name, t.dtype, t.shape) for t in got.inputs] == [
        ("z", "float32", (-1, 8)),
        ("y", "float32", (-1, 3)),
    ]
    assert check_signature(cond.signature("generator"), got) == []
    uncond = read_card(make_model_dir(tmp_path, "u", conditional=False))
    assert check_signature(uncond.signature("generator"), got) == [
        "inputs ['y', 'z'], the contract needs ['z']"
    ]
    wide = cond.model_copy(update={"latent_dim": 9})
    assert check_signature(wide.signature("generator"), got) == [
        "input 'z' has shape [-1, 8], expected float32 [N, 9]"
    ]
    clf = ort.InferenceSession(str(tmp_path / "c" / "classifier.onnx"), providers=["CPUExecutionProvider"])
    assert check_signature(cond.signature("classifier"), Signature.of_session(clf)) == []
    assert check_signature(cond.signature("discriminator"), Signature.of_session(clf)) == [
        "inputs ['image'], the contract needs ['image', 'y']"
    ]


def test_fixed_batch_and_wrong_dtype_are_named():
    from modelformat.signatures import TensorSpec, generator_signature

    want = generator_signature(4, 0, (1, 8, 8))
    image = TensorSpec(name="image", dtype="float32", shape=(-1, 1, 8, 8))
    fixed = Signature(inputs=(TensorSpec(name="z", dtype="float32", shape=(2, 4)),), outputs=(image,))
    assert check_signature(want, fixed) == ["input 'z' has a fixed batch size 2; it must be dynamic"]
    half = Signature(inputs=(TensorSpec(name="z", dtype="float16", shape=(-1, 4)),), outputs=(image,))
    assert check_signature(want, half) == ["input 'z' is float16, the contract needs float32 [N, 4]"]
    no_out = Signature(inputs=want.inputs, outputs=())
    assert check_signature(want, no_out) == ["outputs [] lack ['image']"]


# --- the latent rule ---------------------------------------------------------------------------


def test_the_latent_rule_is_the_documented_one():
    z, labels = latents_for_seeds([0, 5, 2**63 - 1], 16, num_classes=10)
    for row, seed, label in zip(z, [0, 5, 2**63 - 1], labels, strict=True):
        rng = np.random.default_rng(seed)
        np.testing.assert_array_equal(row, rng.standard_normal(16).astype(np.float32))
        assert label == int(rng.integers(10))
    assert z.dtype == np.float32
    # The label is drawn after z, so z does not depend on num_classes.
    np.testing.assert_array_equal(seeded(5, 16, 10)[0], seeded(5, 16)[0])
