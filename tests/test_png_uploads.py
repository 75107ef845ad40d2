"""Uploaded PNGs: only the chunks that carry pixels reach Pillow (issue 18, "PNG text chunks")."""

import io
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from service import imaging
from service.errors import InvalidInput


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)))


def _digit() -> np.ndarray:
    return (np.arange(28 * 28, dtype=np.uint32) % 251).astype(np.uint8).reshape(28, 28, 1)


def _with_text_chunks(png: bytes, count: int, inflated_bytes: int) -> bytes:
    """`count` zTXt chunks inserted after IHDR, each inflating to `inflated_bytes` (cheap to send)."""
    packed = zlib.compress(b"a" * inflated_bytes, 9)
    head = 8 + 12 + 13  # signature + IHDR
    chunks = b"".join(_chunk(b"zTXt", b"k%d\x00\x00" % i + packed) for i in range(count))
    return png[:head] + chunks + png[head:]


def test_text_chunks_are_not_inflated_and_pixels_survive():
    png = imaging.png_bytes(_digit())
    hostile = _with_text_chunks(png, count=63, inflated_bytes=1 << 20)
    assert len(hostile) < 100_000  # ~66 KB on the wire, 63 MB if inflated
    t0 = time.process_time()
    for _ in range(5):
        arr = imaging.decode_png(hostile, "images[0]", (1, 28, 28), 1 << 20)
    per_image = (time.process_time() - t0) / 5
    assert np.array_equal(arr, imaging.decode_png(png, "images[0]", (1, 28, 28), 1 << 20))
    assert per_image < 0.05, f"{per_image * 1000:.1f} ms of CPU for one upload: text chunks were inflated"


def test_pillow_written_png_with_metadata_still_decodes():
    info = PngImagePlugin.PngInfo()
    info.add_text("comment", "x" * 5000, zip=True)
    buf = io.BytesIO()
    Image.fromarray(_digit()[:, :, 0]).save(buf, format="PNG", pnginfo=info)
    arr = imaging.decode_png(buf.getvalue(), "images[0]", (1, 28, 28), 1 << 20)
    assert arr.shape == (1, 28, 28)
    assert np.allclose((arr[0] + 1) * 127.5, _digit()[:, :, 0], atol=0.01)


def test_truncated_chunk_and_too_many_chunks_are_422_naming_the_field():
    png = imaging.png_bytes(_digit())
    with pytest.raises(InvalidInput, match=r"images\[3\]: corrupt PNG data"):
        imaging.decode_png(png[:40] + struct.pack(">I", 10_000) + b"IDAT", "images[3]", (1, 28, 28), 1 << 20)
    many = png[:33] + _chunk(b"tEXt", b"") * (imaging.MAX_PNG_CHUNKS + 1) + png[33:]
    with pytest.raises(InvalidInput, match=r"images\[0\]: more than 4096 PNG chunks") as err:
        imaging.decode_png(many, "images[0]", (1, 28, 28), 1 << 20)
    assert err.value.limit == imaging.MAX_PNG_CHUNKS
