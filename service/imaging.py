"""Images in and out: model output -> PNG (single, grid, strip), GIF, base64; uploads -> arrays.

Why here and small: encoding is per-image work that runs in the inference threads, so it must be
cheap. PNGs are written here directly (signature, IHDR, one IDAT of filter-0 rows at zlib level 1,
IEND): for a 28x28 image that is about half of Pillow's cost and smaller output, and a batch
builds all its scanlines in one numpy operation (docs/BENCHMARKS.md, "Profile").
Uploaded PNGs are checked for their pixel count from the header before any pixel is decoded
(decompression bombs), and reach Pillow with only the chunks that carry pixels (text and ICC chunks
are inflated by Pillow on open: a 60 KB upload of them costs seconds of CPU).
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import struct
import zlib

import numpy as np
from PIL import Image

from .errors import InvalidInput

PNG_LEVEL = 1  # zlib level: small images gain nothing from more effort


def to_uint8(images: np.ndarray) -> np.ndarray:
    """float [N, C, H, W] in [-1, 1] -> uint8 [N, H, W, C] (round half away, clipped)."""
    x = np.clip((np.asarray(images, np.float32) + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def _pil(img: np.ndarray) -> Image.Image:
    return Image.fromarray(img[:, :, 0] if img.shape[2] == 1 else img)


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_COLOR_TYPE = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> grey, grey+alpha, RGB, RGBA


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)))


_PNG_IEND = _chunk(b"IEND", b"")


def _png_head(h: int, w: int, c: int) -> bytes:
    return _PNG_SIGNATURE + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, _PNG_COLOR_TYPE[c], 0, 0, 0))


def _scanlines(images: np.ndarray) -> np.ndarray:
    """uint8 [N, H, W, C] -> uint8 [N, H, 1 + W*C]: each row prefixed by filter type 0 (none)."""
    n, h, w, c = images.shape
    out = np.zeros((n, h, 1 + w * c), np.uint8)
    out[:, :, 1:] = images.reshape(n, h, w * c)
    return out


def png_bytes(img: np.ndarray) -> bytes:
    """uint8 [H, W, C] (C in 1..4) -> PNG bytes (8-bit, non-interlaced)."""
    h, w, c = img.shape
    raw = _scanlines(np.asarray(img, np.uint8)[None])[0]
    return _png_head(h, w, c) + _chunk(b"IDAT", zlib.compress(raw.tobytes(), PNG_LEVEL)) + _PNG_IEND


def png_b64_rows(images: np.ndarray) -> list[str]:
    """float [N, C, H, W] -> one base64 PNG string per image (runs in the inference thread)."""
    u8 = to_uint8(images)
    _, h, w, c = u8.shape
    head = _png_head(h, w, c)
    return [
        base64.b64encode(head + _chunk(b"IDAT", zlib.compress(raw.tobytes(), PNG_LEVEL)) + _PNG_IEND).decode(
            "ascii"
        )
        for raw in _scanlines(u8)
    ]


def grid(images: np.ndarray, ncol: int | None = None, pad: int = 2) -> np.ndarray:
    """uint8 [N, H, W, C] -> one uint8 [H', W', C] grid (ncol defaults to ceil(sqrt(N)))."""
    n, h, w, c = images.shape
    ncol = ncol or math.ceil(math.sqrt(n))
    nrow = math.ceil(n / ncol)
    out = np.zeros((nrow * (h + pad) + pad, ncol * (w + pad) + pad, c), dtype=np.uint8)
    for i in range(n):
        r, q = divmod(i, ncol)
        y, x = pad + r * (h + pad), pad + q * (w + pad)
        out[y : y + h, x : x + w] = images[i]
    return out


def grid_png(images: np.ndarray, ncol: int | None = None) -> bytes:
    return png_bytes(grid(images, ncol))


def strip_png(images: np.ndarray) -> bytes:
    return png_bytes(grid(images, ncol=len(images)))


def gif_bytes(images: np.ndarray, duration_ms: int = 80) -> bytes:
    """uint8 [N, H, W, C] -> an endlessly looping animated GIF."""
    frames = [_pil(img) for img in images]
    if frames[0].mode == "RGB":
        frames = [f.quantize(colors=256) for f in frames]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=duration_ms, loop=0)
    return buf.getvalue()


def b64decode(data: str, field: str) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInput(f"{field}: not valid base64 ({exc})", field=field) from exc


_PNG_PIXEL_CHUNKS = frozenset({b"IHDR", b"PLTE", b"tRNS", b"IDAT", b"IEND"})
MAX_PNG_CHUNKS = 4096  # a walk over chunk headers stays well under a millisecond per upload


def png_pixel_chunks(data: bytes, field: str) -> bytes:
    """The PNG with only the chunks that carry pixels (others dropped unread); non-PNG data as is.

    Why: Pillow inflates every zTXt/iTXt/iCCP chunk when it opens a file, so ancillary chunks are
    work a client can make the server do for free. The walk reads chunk headers only.
    """
    if not data.startswith(_PNG_SIGNATURE):
        return data  # Pillow names the format in the 422
    kept, pos, count = [_PNG_SIGNATURE], len(_PNG_SIGNATURE), 0
    while pos + 12 <= len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        end = pos + 12 + length
        if end > len(data):
            raise InvalidInput(f"{field}: corrupt PNG data (a chunk runs past the end)", field=field)
        count += 1
        if count > MAX_PNG_CHUNKS:
            raise InvalidInput(
                f"{field}: more than {MAX_PNG_CHUNKS} PNG chunks", field=field, limit=MAX_PNG_CHUNKS
            )
        kind = data[pos + 4 : pos + 8]
        if kind in _PNG_PIXEL_CHUNKS:
            kept.append(data[pos:end])
        pos = end
        if kind == b"IEND":
            break
    return b"".join(kept)


def decode_png(data: bytes, field: str, image_shape, max_pixels: int) -> np.ndarray:
    """PNG bytes -> float32 [C, H, W] in [-1, 1] matching the model's `image_shape` (or 422)."""
    c, h, w = image_shape
    data = png_pixel_chunks(data, field)
    try:
        img = Image.open(io.BytesIO(data))
    except Exception as exc:  # Pillow raises several types for non-images
        raise InvalidInput(f"{field}: not a readable image", field=field) from exc
    if img.format != "PNG":
        raise InvalidInput(f"{field}: expected a PNG image, got {img.format}", field=field)
    pixels = img.size[0] * img.size[1]
    if pixels > max_pixels:
        raise InvalidInput(
            f"{field}: {img.size[0]}x{img.size[1]} = {pixels} pixels exceeds the limit of {max_pixels}",
            field=field,
            limit=max_pixels,
        )
    if img.size != (w, h):
        raise InvalidInput(
            f"{field}: image is {img.size[0]}x{img.size[1]}, the model needs {w}x{h}", field=field
        )
    try:
        img = img.convert("L" if c == 1 else "RGB")
        arr = np.asarray(img, dtype=np.float32)
    except Exception as exc:  # truncated or corrupt data
        raise InvalidInput(f"{field}: corrupt PNG data", field=field) from exc
    arr = arr[:, :, None] if arr.ndim == 2 else arr
    return (arr.transpose(2, 0, 1) / 127.5 - 1.0).astype(np.float32)
