"""Loaders on files the tests write themselves, the vendored MNIST files, and the fixed split."""

import gzip
import hashlib
import shutil
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from training.data import (
    MNIST_DIR,
    MNIST_FILES,
    load_dataset,
    load_embedded_mnist,
    load_idx,
    load_image_folder,
    load_mnist,
    split,
)


def write_idx(path, array: np.ndarray, gz: bool) -> None:
    header = b"\x00\x00\x08" + bytes([array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_files_load_as_minus_one_to_one(tmp_path, gz):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, 28, 28), dtype=np.uint8)
    images[0, 0, 0], images[0, 0, 1] = 0, 255
    labels = np.arange(12) % 4
    suffix = ".gz" if gz else ""
    write_idx(tmp_path / f"img-idx3-ubyte{suffix}", images, gz)
    write_idx(tmp_path / f"lab-idx1-ubyte{suffix}", labels, gz)
    data = load_idx(tmp_path / f"img-idx3-ubyte{suffix}", tmp_path / f"lab-idx1-ubyte{suffix}")
    assert data.images.shape == (12, 1, 28, 28) and data.images.dtype == torch.float32
    assert data.images[0, 0, 0, 0] == -1.0 and data.images[0, 0, 0, 1] == 1.0
    np.testing.assert_allclose(data.images[3, 0].numpy(), images[3] / 127.5 - 1, atol=1e-6)
    assert data.labels.tolist() == labels.tolist()
    assert data.class_names == ("0", "1", "2", "3")


def test_idx_rejects_wrong_magic_and_truncated_files(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x00\x00\x0d\x03" + b"\x00" * 20)
    with pytest.raises(ValueError, match="not an unsigned-byte IDX"):
        load_idx(tmp_path / "bad", tmp_path / "bad")
    write_idx(tmp_path / "img", np.zeros((4, 5, 5)), gz=False)
    (tmp_path / "short").write_bytes((tmp_path / "img").read_bytes()[:-3])
    with pytest.raises(ValueError, match="header says"):
        load_idx(tmp_path / "short", tmp_path / "img")


def test_dataset_source_idx_is_resized_to_the_model_size(tmp_path):
    write_idx(tmp_path / "i", np.full((6, 28, 28), 255), gz=False)
    write_idx(tmp_path / "l", np.arange(6) % 2, gz=False)
    data = load_dataset(f"idx:{tmp_path / 'i'},{tmp_path / 'l'}", image_size=32, channels=3)
    assert data.images.shape == (6, 3, 32, 32)
    assert torch.allclose(data.images, torch.ones_like(data.images))


@pytest.mark.parametrize("channels", [1, 3])
def test_image_folder_classes_resize_and_crop(tmp_path, channels):
    (tmp_path / "cats").mkdir()
    (tmp_path / "dogs").mkdir()
    Image.new("RGB", (60, 40), (255, 0, 0)).save(tmp_path / "cats" / "a.png")
    Image.new("L", (32, 32), 0).save(tmp_path / "cats" / "b.jpg")
    Image.new("RGB", (40, 80), (0, 0, 255)).save(tmp_path / "dogs" / "c.jpeg")
    (tmp_path / "dogs" / "notes.txt").write_text("ignored")
    data = load_image_folder(tmp_path, image_size=32, channels=channels)
    assert data.class_names == ("cats", "dogs")
    assert data.labels.tolist() == [0, 0, 1]
    assert data.images.shape == (3, channels, 32, 32)
    assert data.images.min() >= -1 and data.images.max() <= 1
    if channels == 3:  # red stays red after resize + centre crop
        assert data.images[0, 0].mean() > 0.99 and data.images[0, 2].mean() < -0.99


def test_image_folder_without_classes_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no class sub-folders"):
        load_image_folder(tmp_path, 28, 1)


def test_embedded_mnist_and_a_fixed_stratified_split():
    data = load_embedded_mnist()
    assert data.images.shape == (5000, 1, 28, 28)
    assert data.images.min() == -1.0 and data.images.max() == 1.0
    train, held = split(data, heldout_fraction=0.2, seed=0)
    assert len(train) == 4000 and len(held) == 1000
    assert held.labels.bincount().tolist() == [100] * 10
    assert train.labels[:50].unique().numel() > 5  # shuffled, not sorted by label
    again_train, again_held = split(data, heldout_fraction=0.2, seed=0)
    assert torch.equal(held.images, again_held.images) and torch.equal(train.labels, again_train.labels)
    # no image is in both parts
    held_keys = {x.numpy().tobytes() for x in held.images}
    assert not held_keys & {x.numpy().tobytes() for x in train.images}


def test_vendored_mnist_files_are_the_published_ones():
    """md5s published with MNIST: of the uncompressed images file and of the labels .gz."""
    images = (MNIST_DIR / "train-images-idx3-ubyte.gz").read_bytes()
    labels = (MNIST_DIR / "train-labels-idx1-ubyte.gz").read_bytes()
    assert hashlib.md5(gzip.decompress(images)).hexdigest() == "6bbc9ace898e44ae57da46a324031adb"
    assert hashlib.md5(labels).hexdigest() == "d53e105ee54ea40749a09fcbcd1e9432"
    assert (MNIST_DIR / "README.md").read_text().count("CC BY-SA 3.0") >= 1


def test_mnist_is_the_full_training_set_with_a_fixed_split():
    data = load_dataset("mnist")
    assert data.name == "mnist" and data.images.shape == (60000, 1, 28, 28)
    assert data.images.min() == -1.0 and data.images.max() == 1.0
    assert data.labels.bincount().tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    train, held = split(data)  # the documented split: 20% of each digit held out, seed 0
    assert len(train) == 48000 and len(held) == 12000
    assert held.labels.bincount().tolist() == [1185, 1348, 1192, 1226, 1168, 1084, 1184, 1253, 1170, 1190]
    assert load_dataset("mnist-5k").name == "mnist-5k"


@pytest.mark.parametrize("damage", ["truncate", "flip", "missing"])
@pytest.mark.parametrize("name", sorted(MNIST_FILES))
def test_a_damaged_mnist_file_is_a_clear_error_naming_it(tmp_path, name, damage):
    for f in MNIST_FILES:
        shutil.copy(MNIST_DIR / f, tmp_path / f)
    raw = (tmp_path / name).read_bytes()
    if damage == "truncate":
        (tmp_path / name).write_bytes(raw[: len(raw) // 2])
    elif damage == "flip":
        (tmp_path / name).write_bytes(raw[:100] + bytes([raw[100] ^ 1]) + raw[101:])
    else:
        (tmp_path / name).unlink()
    error = FileNotFoundError if damage == "missing" else ValueError
    with pytest.raises(error, match=str(tmp_path / name).replace(".", r"\.")):
        load_mnist(tmp_path)


def test_a_truncated_gzip_idx_file_is_a_clear_error(tmp_path):
    write_idx(tmp_path / "img.gz", np.zeros((4, 5, 5)), gz=True)
    (tmp_path / "cut.gz").write_bytes((tmp_path / "img.gz").read_bytes()[:-10])
    with pytest.raises(ValueError, match="cut.gz: corrupt or truncated gzip"):
        load_idx(tmp_path / "cut.gz", tmp_path / "img.gz")
