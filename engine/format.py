"""The stream format's vocabulary: coding modes, colour kinds, size limits and identity sizes.

A leaf: the container (:mod:`~latentcodec.engine.bitstream`) and everything that reads headers import it
without loading torch or the model registries.
"""

from __future__ import annotations

import struct
from enum import IntEnum

DEFAULT_MODEL = "taef2-q4"  # the autoencoder new streams are made with unless the caller names one
FINGERPRINT_BYTES = 8  # hash of a network's weights, as streams record it
MAX_ID = 64  # bytes of a model or denoiser id
MAX_SIDE = 65535  # what PNG, WebP readers and the header's fields all carry
MAX_PIXELS = 1 << 26  # 67.1 Mpixel: under Pillow's decompression-bomb error (179 Mpixel); tiling keeps memory flat
MAX_STREAM_BYTES = 4 * MAX_PIXELS  # no valid stream is larger (int16 latents and alpha: about 2 bytes a pixel)
MIN_STEP, MAX_STEP = 1e-3, 64.0  # uniform quantization steps a stream may carry
MAX_PALETTE = 4096


class _NamedId(IntEnum):
    """An id stored in the header that users name in lower case (``parse`` raises ValueError for others)."""

    @classmethod
    def parse(cls, name: str | _NamedId) -> _NamedId:
        if isinstance(name, cls):
            return name
        try:
            return cls[str(name).upper()]
        except KeyError:
            choices = ", ".join(member.label for member in cls)
            raise ValueError(f"unknown {cls.what()} {name!r}; choose {choices}") from None

    @classmethod
    def what(cls) -> str:
        """What users call the id, for messages."""
        return cls.__name__

    @property
    def label(self) -> str:
        return self.name.lower()


class CodingMode(_NamedId):
    """How a stream's latents were quantized (its id is stored in the header)."""

    SCALAR8 = 0
    UNIFORM = 1
    PALETTE = 2

    @classmethod
    def what(cls) -> str:
        return "mode"


class EntropyMethod(_NamedId):
    """How a stream's latent symbols are entropy-coded (its id is stored in version-4 headers)."""

    ZSTD = 0  # one zstd frame of the byte planes (every mode; the only method before version 4)
    CONTEXT = 1  # an ANS stream under the latent space's context model, wavefront order (uniform int8 symbols)
    PASSES_V1 = 2  # an ANS stream under the latent space's first passes model: 16 steps at any size (uniform int8)
    PASSES = 3  # the same schedule under the second passes model (side information for the first step, more units)

    @classmethod
    def what(cls) -> str:
        return "entropy method"


class ColorKind(IntEnum):
    """What the decoder hands back: the input's colour model, with alpha only where it was kept."""

    L = 0
    LA = 1
    RGB = 2
    RGBA = 3

    @property
    def has_alpha(self) -> bool:
        return self in (ColorKind.LA, ColorKind.RGBA)

    @property
    def pil_mode(self) -> str:
        return self.name


def size_supported(width: int, height: int) -> bool:
    """Whether an image of this size may be encoded (and a stream may declare it)."""
    return 1 <= width <= MAX_SIDE and 1 <= height <= MAX_SIDE and width * height <= MAX_PIXELS


UNIFORM_PARAMS = struct.Struct("<fB")  # a uniform stream's parameters: step (float32), symbol width in bytes
UNIFORM_WEIGHTED = struct.Struct("<fBB")  # with steps per channel: step, step table id (never 0), symbol width


def uniform_params(params: bytes) -> tuple[float, int, int] | None:
    """(step, step table id (0: one step for every channel), symbol width) of a uniform stream's parameters, or
    None where they have neither layout's size (not validated: the coder checks them)."""
    if len(params) == UNIFORM_PARAMS.size:
        step, width = UNIFORM_PARAMS.unpack(params)
        return step, 0, width
    if len(params) == UNIFORM_WEIGHTED.size:
        return UNIFORM_WEIGHTED.unpack(params)
    return None
