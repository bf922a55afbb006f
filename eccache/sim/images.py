"""Synthetic PNG images without PIL: a minimal encoder (8-bit RGB, filter 0, zlib).

The pixel data depends on the size and on ``seed % 4`` (compressed once per pair and cached); the full seed
goes into a ``tEXt`` chunk, so every seed gives different bytes (a different content hash, hence a
different cache key) at almost no cost, even for 2048x2048 images. Encoders see the real width and height.
"""

from __future__ import annotations

import base64
import functools
import struct
import zlib

import numpy as np

_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


@functools.lru_cache(maxsize=64)
def _idat(width: int, height: int, tint: int) -> bytes:
    """Compressed scanlines of a smooth gradient tinted by ``tint`` (each row: filter byte 0 + RGB)."""
    x = np.arange(width, dtype=np.uint32)
    y = np.arange(height, dtype=np.uint32)[:, None]
    rgb = np.empty((height, width, 3), dtype=np.uint8)
    rgb[..., 0] = (x * 255 // max(1, width - 1)).astype(np.uint8)
    rgb[..., 1] = (y * 255 // max(1, height - 1)).astype(np.uint8)
    rgb[..., 2] = np.uint8((tint * 37) % 256)
    rows = np.zeros((height, 1 + 3 * width), dtype=np.uint8)
    rows[:, 1:] = rgb.reshape(height, 3 * width)
    return zlib.compress(rows.tobytes(), 1)


def png_bytes(width: int, height: int, seed: int = 0) -> bytes:
    """A valid RGB PNG of ``width`` x ``height`` whose bytes are unique per ``seed``."""
    if width <= 0 or height <= 0:
        raise ValueError("image dimensions must be positive")
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"tEXt", b"eccache-sim\x00" + str(seed).encode())
            + _chunk(b"IDAT", _idat(width, height, seed % 4)) + _chunk(b"IEND", b""))


def png_data_url(width: int, height: int, seed: int = 0) -> str:
    """The PNG as a ``data:image/png;base64,...`` URL (what an OpenAI client sends inline)."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(width, height, seed)).decode()
