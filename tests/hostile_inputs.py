"""Hostile inputs shared by the hardening tests, the fuzz harness and the soak: tiny files that declare a lot."""

from __future__ import annotations

import io
import struct

import numpy as np
from PIL import Image

from latentcodec.engine import bitstream
from latentcodec.engine.bitstream import DenoiserRef, Header, Stream
from latentcodec.engine.entropy import zstd
from latentcodec.engine.format import CodingMode, ColorKind


def declared_stream(
    width: int,
    height: int,
    *,
    model_id: str = "taef2",
    fingerprint: bytes = bytes(8),
    denoiser: DenoiserRef | None = None,
    coded: tuple[int, int] | None = None,
    noise_level: float | None = None,
) -> bytes:
    """A valid stream of all-zero uniform symbols declaring ``width x height``, coded at ``coded`` (width, height;
    the declared size by default, a smaller one is resized on decode): a few hundred bytes at any size."""
    coded_width, coded_height = coded or (width, height)
    latents = 32 if model_id.startswith("taef2") else 4
    size = latents * -(-coded_height // 8) * -(-coded_width // 8)
    header = Header(
        ColorKind.RGB,
        CodingMode.UNIFORM,
        width,
        height,
        coded_width,
        coded_height,
        model_id,
        fingerprint,
        False,
        denoiser,
        noise_level,
    )
    params = struct.pack("<fB", 1.0, 1)
    return bitstream.pack(Stream(header, params, zstd.compress(bytes(size), 3)))


def dds_file() -> bytes:
    """148 bytes that Pillow opens as DDS and refuses with NotImplementedError when loading."""
    header = bytearray(124)
    struct.pack_into("<IIIIIII", header, 0, 124, 0x1007, 4, 4, 0, 0, 0)
    struct.pack_into("<II4s", header, 72, 32, 4, b"XYZW")
    return b"DDS " + bytes(header) + bytes(20)


def png_bytes(image: Image.Image, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **params)
    return buffer.getvalue()


def png_bomb(width: int = 6000, height: int = 3000) -> bytes:
    """A greyscale PNG of zeros: tens of KB that decode to ``width * height`` bytes."""
    return png_bytes(Image.fromarray(np.zeros((height, width), dtype=np.uint8)), optimize=True)
