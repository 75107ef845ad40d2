"""Sample grids and loss curves written next to the numbers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def to_uint8(images: np.ndarray) -> np.ndarray:
    """[-1, 1] float [N, C, H, W] -> uint8 [N, H, W, C]."""
    pixels = np.clip(np.rint((np.asarray(images) + 1.0) * 127.5), 0, 255).astype(np.uint8)
    return pixels.transpose(0, 2, 3, 1)


def grid(images: np.ndarray, nrow: int, pad: int = 2) -> Image.Image:
    """Tile [N, C, H, W] images in [-1, 1] into rows of `nrow`, with a `pad`-pixel border."""
    pixels = to_uint8(images)
    n, h, w, c = pixels.shape
    rows = -(-n // nrow)
    canvas = np.zeros((pad + rows * (h + pad), pad + nrow * (w + pad), c), dtype=np.uint8)
    for i, img in enumerate(pixels):
        r, col = divmod(i, nrow)
        canvas[
            pad + r * (h + pad) : pad + r * (h + pad) + h, pad + col * (w + pad) : pad + col * (w + pad) + w
        ] = img
    return Image.fromarray(canvas[:, :, 0] if c == 1 else canvas)


def save_grid(images: np.ndarray, nrow: int, path: Path, scale: int = 2) -> None:
    img = grid(images, nrow)
    img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST).save(path)


def plot_losses(history: np.ndarray, path: Path, steps_per_epoch: int) -> None:
    """history columns: loss_d, loss_g, D(x), D(G(z)) per step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if len(history) == 0:
        return
    window = max(1, min(50, len(history) // 10))
    kernel = np.ones(window) / window
    epochs = np.arange(len(history)) / max(1, steps_per_epoch)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.5))
    for col, name, ax in ((0, "loss D", ax1), (1, "loss G", ax1), (2, "D(x)", ax2), (3, "D(G(z))", ax2)):
        smooth = np.convolve(history[:, col], kernel, mode="valid")
        ax.plot(epochs[: len(smooth)], smooth, label=name)
    ax1.set_xlabel("epoch")
    ax2.set_xlabel("epoch")
    ax1.legend()
    ax2.legend()
    ax1.set_title(f"losses (moving average of {window} steps)")
    ax2.set_title("discriminator outputs")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
