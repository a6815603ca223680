"""The odd inputs every entry point must handle: (name, bytes, expected message part)."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image

from tests.conftest import jpeg_bytes, lesion_image, png_bytes


def png_header_bomb(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels."""
    data = png_bytes(Image.new("L", (1, 1)))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    patched = struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk))
    return data[:8] + patched + data[8 + 25 :]


def truncated_jpeg() -> bytes:
    """A JPEG cut off half way."""
    data = jpeg_bytes(lesion_image("nv", 3))
    return data[: len(data) // 2]


def animated_png() -> bytes:
    """A 2-frame animated PNG."""
    frames = [Image.fromarray(lesion_image("nv", i)) for i in range(2)]
    buf = io.BytesIO()
    frames[0].save(buf, format="PNG", save_all=True, append_images=frames[1:])
    return buf.getvalue()


def animated_gif() -> bytes:
    """A 2-frame GIF."""
    frames = [Image.fromarray(lesion_image("nv", i)).convert("P") for i in range(2)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    return buf.getvalue()


def bad_inputs() -> list[tuple[str, bytes, str]]:
    """Every rejected input with a fragment of its message."""
    rng = np.random.default_rng(0)
    return [
        ("empty.jpg", b"", "empty"),
        ("document.jpg", b"%PDF-1.7\n1 0 obj\n<<>>\nendobj\n", "PDF"),
        ("notes.jpg", b"Patient notes: follow up in 3 months.\n", "text file"),
        ("random.jpg", rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(), "not a JPEG or PNG"),
        ("truncated.jpg", truncated_jpeg(), "truncated"),
        ("bomb.png", png_header_bomb(20000, 20000), "decompression bomb"),
        ("bomb100mp.png", png_header_bomb(10000, 10000), "decompression bomb"),
        ("tiny.png", png_bytes(Image.new("RGB", (16, 16), (120, 80, 60))), "too small"),
        ("animated.gif", animated_gif(), "GIF"),
        ("animated.png", animated_png(), "multi-frame"),
        ("huge.jpg", b"\xff\xd8\xff" + b"\0" * (21 * 1024 * 1024), "limit is 20 MB"),
    ]
