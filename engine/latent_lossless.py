"""Exact latent streams: integer latents (uint8 caches such as Imagenet.int8's, int8, int16, int32) coded exactly
and decoded to the same dtype, and near-lossless float latents (``round(x / step)`` coded exactly: every value
within ``step / 2``, for steps finer than the uniform mode's context coders take).

The integers less their median are split into a coarse part ``round(s / 2**k)``, coded as a uniform latent stream
(step 1) by the context coders, whose int8 symbols fit it, and ``k`` low bits per value (zstd): the coders' models
know coarse latents, and the low bits of fine ones are close to noise. ``k`` is the cheapest of a few tried. Coarse
symbols the int8 range clamps (at most the extremes) are escapes: their flat index and value.

Layout: the ``LCZI`` header (:data:`_HEAD`), the escapes' zstd frame, the low bits' zstd frame, the latent stream.
"""

from __future__ import annotations

import math
import struct

import numpy as np
import torch

from latentcodec.engine.entropy import zstd
from latentcodec.engine.errors import CorruptStreamError, InvalidLatentsError
from latentcodec.engine.format import MAX_STEP
from latentcodec.engine.info import StreamInput, read_stream
from latentcodec.engine.latent_api import decode_latents, encode_latents
from latentcodec.engine.latent_intake import prepare_latents
from latentcodec.engine.latent_spaces import DEFAULT_LATENT_SPACE
from latentcodec.engine.latent_spaces import latent_space as space_named

__all__ = ["decode_latents_lossless", "encode_latents_lossless", "is_lossless"]

MAGIC = b"LCZI"
_HEAD = struct.Struct("<4sBBifIII")  # magic, dtype code, low bits k, offset, step (0: integers), escapes, 2 frames
_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.float32)  # the code is the index; float: step
_ENTRY = np.dtype([("index", "<u4"), ("value", "<i8")])
_RADIUS = 127  # the context coders' int8 symbols
_MAX_BITS = 24


def is_lossless(data: bytes) -> bool:
    """Whether ``data`` is an exact (lossless or near-lossless) latent stream."""
    return data[:4] == MAGIC


def _one(latents: object) -> torch.Tensor:
    if isinstance(latents, np.ndarray):
        latents = torch.from_numpy(np.ascontiguousarray(latents).copy())
    if not isinstance(latents, torch.Tensor):
        raise InvalidLatentsError(f"latents must be a torch tensor or a numpy array, not {type(latents).__name__}")
    x = latents.detach().cpu()
    return x[0] if x.ndim == 4 and x.shape[0] == 1 else x


def _integers(latents: object, step: float | None, space: str) -> tuple[torch.Tensor, int]:
    """The latent's integers (int64) and its dtype code: the values themselves, or ``round(x / step)``."""
    x = _one(latents)
    if step is None:
        if x.dtype not in _DTYPES[:-1]:
            raise InvalidLatentsError(f"lossless latents are uint8, int8, int16 or int32, not {x.dtype} (float: step=)")
        if x.ndim != 3:
            raise InvalidLatentsError(f"one latent is [C, h, w] (or [1, C, h, w]), not {list(x.shape)}")
        return x.to(torch.int64), _DTYPES.index(x.dtype)
    if not (isinstance(step, (int, float)) and 0 < step <= MAX_STEP and math.isfinite(step)):
        raise ValueError(f"step must be a number in (0, {MAX_STEP}], got {step!r}")
    q = prepare_latents(x, space_named(space)).double().div(float(np.float32(step))).round()
    if q.abs().max() > 2**31 - 1:
        raise InvalidLatentsError(f"step {step:g} is too fine for latents of magnitude {float(x.abs().max()):g}")
    return q.to(torch.int64), len(_DTYPES) - 1


def _split(s: torch.Tensor, k: int) -> tuple[torch.Tensor, np.ndarray]:
    """Coarse symbols ``floor((s + half) / 2**k)`` and the low bits ``(s + half) mod 2**k``, as ``k`` packed bits."""
    shifted = s + ((1 << k) >> 1)
    high = torch.div(shifted, 1 << k, rounding_mode="floor")
    low = (shifted - (high << k)).flatten().numpy().astype(np.uint32)
    bits = ((low[:, None] >> np.arange(k, dtype=np.uint32)) & 1).astype(np.uint8)
    return high, np.packbits(bits, axis=None)


def _unsplit(high: torch.Tensor, packed: bytes, k: int) -> torch.Tensor:
    n = high.numel()
    bits = np.unpackbits(np.frombuffer(packed, np.uint8), count=n * k).reshape(n, k).astype(np.int64)
    low = torch.from_numpy((bits << np.arange(k, dtype=np.int64)).sum(1)).reshape(high.shape)
    return (high << k) + low - ((1 << k) >> 1)


def _coded(values: torch.Tensor, offset: int, k: int, space: str, entropy: str) -> tuple[int, bytes, bytes, bytes]:
    high, low = _split(values - offset, k)
    clamped = high.clamp(-_RADIUS, _RADIUS)
    index = (clamped != high).flatten().nonzero().flatten()
    entries = np.zeros(len(index), _ENTRY)
    entries["index"], entries["value"] = index.numpy(), values.flatten()[index].numpy()
    escapes = zstd.compress(entries.tobytes()) if len(index) else b""
    inner = encode_latents(clamped.float(), latent_space=space, step=1.0, entropy=entropy)
    return len(index), escapes, zstd.compress(low.tobytes()) if k else b"", inner


def encode_latents_lossless(
    latents: torch.Tensor | np.ndarray,
    *,
    step: float | None = None,
    latent_space: str = DEFAULT_LATENT_SPACE,
    entropy: str = "passes",
) -> bytes:
    """An exact stream of one integer latent ``[C, h, w]`` (uint8, int8, int16 or int32) of ``latent_space``; with
    ``step``, a near-lossless stream of a float latent: each value within ``step / 2`` (step = 2 x the bound)."""
    values, code = _integers(latents, step, latent_space)
    offset = int(values.flatten().median()) if values.numel() else 0
    spread = float((values - offset).double().std()) if values.numel() > 1 else 0.0
    guess = max(0, round(math.log2(max(spread, 1.0) / 4)))  # coarse symbols of a spread of about 4
    best = None
    for k in sorted({max(0, guess - 1), guess, min(_MAX_BITS, guess + 1)}):
        count, escapes, low, inner = _coded(values, offset, k, latent_space, entropy)
        head = _HEAD.pack(MAGIC, code, k, offset, step or 0.0, count, len(escapes), len(low))
        candidate = head + escapes + low + inner
        best = candidate if best is None or len(candidate) < len(best) else best
    return best


def decode_latents_lossless(data: StreamInput) -> torch.Tensor:
    """The latents ``[C, h, w]`` (CPU) of an exact stream: the integer dtype they were coded from, or float32."""
    raw = read_stream(data)
    if len(raw) < _HEAD.size or not is_lossless(raw):
        raise CorruptStreamError("not a lossless latent stream (no LCZI header)")
    _, code, k, offset, step, count, escape_size, low_size = _HEAD.unpack_from(raw)
    start = _HEAD.size + escape_size + low_size
    if code >= len(_DTYPES) or k > _MAX_BITS or start > len(raw) or (escape_size == 0) != (count == 0):
        raise CorruptStreamError("bad lossless latent stream header")
    if (code == len(_DTYPES) - 1) != (step > 0) or (k == 0) != (low_size == 0):
        raise CorruptStreamError("bad lossless latent stream header")
    high = decode_latents(raw[start:], dtype=torch.float64).round().to(torch.int64)
    low = zstd.decompress(raw[_HEAD.size + escape_size : start], -(-high.numel() * k // 8)) if k else b""
    values = _unsplit(high, low, k) + offset
    if count:
        frame = raw[_HEAD.size : _HEAD.size + escape_size]
        entries = np.frombuffer(zstd.decompress(frame, count * _ENTRY.itemsize), _ENTRY)
        if int(entries["index"].max()) >= values.numel():
            raise CorruptStreamError("a lossless escape lies outside the latents")
        index, escaped = (torch.from_numpy(entries[name].astype(np.int64)) for name in ("index", "value"))
        values.view(-1)[index] = escaped
    dtype = _DTYPES[code]
    if dtype.is_floating_point:
        return (values.double() * step).float()
    info = torch.iinfo(dtype)
    if values.numel() and not (info.min <= int(values.min()) and int(values.max()) <= info.max):
        raise CorruptStreamError(f"lossless latents outside the range of {dtype}")
    return values.to(dtype)
