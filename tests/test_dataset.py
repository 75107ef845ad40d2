"""`ganserve dataset` against a real uvicorn on 127.0.0.1: 20,000 images, rebuilt from the manifest
byte for byte; an interrupted (killed) run resumes from its chunks; the ImageFolder layout."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from modelkit import reference_images
from PIL import Image
from prometheus_client import REGISTRY

from service import dataset
from service.cli import main
from service.imaging import to_uint8


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def images_made(model: str) -> float:
    return REGISTRY.get_sample_value("ganserve_images_generated_total", {"model": model}) or 0.0


def assert_reference_pixels(model_root, model, images, seeds, labels=None) -> None:
    """The dataset's pixels are the generator's for (seed, label) under the latent rule."""
    want = to_uint8(reference_images(model_root / model, seeds, labels))[..., 0]
    assert np.abs(images.astype(int) - want.astype(int)).max() <= 1


def test_20000_images_rebuild_byte_for_byte_from_the_manifest(live_server, model_root, tmp_path, capsys):
    out = tmp_path / "digits.npz"
    args = ["--url", live_server, "dataset", str(out), "--model", "tiny-cgan", "--labels", "2,0"]
    code, text, err = run(capsys, *args, "--per-label", "10000", "--seed", "77", "--no-progress")
    assert code == 0, err
    assert "20000 images from tiny-cgan" in text and "resumed" not in text
    with np.load(out) as z:
        images, labels, seeds = z["images"], z["labels"], z["seeds"]
    assert images.dtype == np.uint8 and images.shape == (20000, 8, 8)
    assert labels.tolist() == [2] * 10000 + [0] * 10000
    assert seeds.tolist() == list(range(77, 20077))
    pick = np.random.default_rng(0).choice(20000, 300, replace=False)
    assert_reference_pixels(model_root, "tiny-cgan", images[pick], seeds[pick].tolist(), labels[pick])
    assert not dataset.parts_dir(out).exists()

    manifest_file = tmp_path / "digits.manifest.json"
    manifest = json.loads(manifest_file.read_text())
    plan = manifest["plan"]
    assert plan["model"] == "tiny-cgan" and plan["generator_sha256"].startswith("sha256:")
    assert manifest["seed_range"] == [77, 20077] and "default_rng(seed)" in plan["latent_rule"]
    assert manifest["command"].startswith(f"ganserve dataset {out} --model tiny-cgan --seed 77")

    again = tmp_path / "again.npz"
    code, _, err = run(
        capsys, "--url", live_server, "dataset", str(again), "--from-manifest", str(manifest_file)
    )
    assert code == 0, err
    assert again.read_bytes() == out.read_bytes()
    # the recorded command builds the same bytes too (other chunking: batches never matter)
    third = tmp_path / "third.npz"
    cmd = manifest["command"].split()[2:]
    cmd[0] = str(third)
    cmd[cmd.index("--chunk") + 1] = "100"
    code, _, err = run(capsys, "--url", live_server, "dataset", *cmd, "--no-progress")
    assert code == 0, err
    with np.load(third) as z:
        np.testing.assert_array_equal(z["images"], images)

    # refusals: the output exists; the manifest names another generator
    code, _, err = run(
        capsys, "--url", live_server, "dataset", str(out), "--from-manifest", str(manifest_file)
    )
    assert code == 1 and "exists" in err
    manifest["plan"]["generator_sha256"] = "sha256:" + "0" * 64
    manifest_file.write_text(json.dumps(manifest))
    code, _, err = run(
        capsys,
        "--url",
        live_server,
        "dataset",
        str(tmp_path / "x.npz"),
        "--from-manifest",
        str(manifest_file),
    )
    assert code == 1 and "generator" in err


def test_a_killed_run_resumes_from_its_chunks(live_server, model_root, tmp_path, capsys):
    out = tmp_path / "plain.npz"
    args = ["--url", live_server, "dataset", str(out), "--model", "tiny-gan", "-n", "60000", "--seed", "5"]
    args += ["--chunk", "64", "--concurrency", "2"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.cli", *args, "--no-progress"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    parts = dataset.parts_dir(out)
    deadline = time.monotonic() + 60
    while len(list(parts.glob("chunk-*.npy"))) < 20:
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read().decode()
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)  # no clean-up at all
    proc.wait(30)
    assert not out.exists()
    on_disk = len(list(parts.glob("chunk-*.npy")))
    assert 20 <= on_disk < 60000 // 64

    # another plan cannot reuse these parts
    code, _, err = run(capsys, *[a if a != "5" else "6" for a in args], "--no-progress")
    assert code == 1 and "another plan" in err

    before = images_made("tiny-gan")
    code, text, err = run(capsys, *args, "--no-progress")
    assert code == 0, err
    assert "(resumed)" in text
    fetched = images_made("tiny-gan") - before
    assert fetched <= 60000 - on_disk * 64 + 64  # the chunks on disk were not asked for again
    with np.load(out) as z:
        images, labels, seeds = z["images"], z["labels"], z["seeds"]
    assert images.shape == (60000, 8, 8) and set(labels.tolist()) == {-1}
    assert seeds.tolist() == list(range(5, 60005))
    pick = np.random.default_rng(1).choice(60000, 300, replace=False)
    assert_reference_pixels(model_root, "tiny-gan", images[pick], seeds[pick].tolist())


def test_imagefolder_layout_and_its_rebuild(live_server, model_root, tmp_path, capsys):
    out = tmp_path / "tree"
    args = ["--url", live_server, "dataset", str(out), "--model", "tiny-cgan", "--per-label", "7"]
    code, _, err = run(capsys, *args, "--chunk", "5", "--no-progress")
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["0", "1", "2", "manifest.json"]
    files = sorted(out.glob("*/*.png"))
    assert len(files) == 21 and files[0].name == "0000000_seed0.png"
    first = np.asarray(Image.open(out / "1" / "0000007_seed7.png"))
    assert_reference_pixels(model_root, "tiny-cgan", first[None], [7], [1])
    again = tmp_path / "tree2"
    code, _, err = run(
        capsys, "--url", live_server, "dataset", str(again), "--from-manifest", str(out / "manifest.json")
    )
    assert code == 0, err
    assert [p.read_bytes() for p in files] == [again.joinpath(p.relative_to(out)).read_bytes() for p in files]


@pytest.mark.parametrize(
    "argv, text",
    [
        (["--model", "tiny-gan", "--per-label", "3"], "unconditional"),
        (["--model", "tiny-cgan", "-n", "10"], "divisible"),
        (["--model", "tiny-cgan", "--per-label", "2", "--labels", "0,7"], "labels must be in 0..2"),
    ],
)
def test_plans_that_cannot_be_built_are_refused(live_server, tmp_path, capsys, argv, text):
    code, _, err = run(capsys, "--url", live_server, "dataset", str(tmp_path / "x.npz"), *argv)
    assert code == 1 and text in err
