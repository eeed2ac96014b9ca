"""Latent coding modes: latents <-> (mode parameters, raw symbol planes) ready for the entropy stage.

Every coder works on batches ``[B, C, H, W]`` and lays symbols out channel-major (one plane per channel),
which is what zstd compresses best. Parameters are small per-image byte strings stored in the header.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

import numpy as np
import torch

from latentcodec import kernels
from latentcodec.engine.errors import CorruptStreamError
from latentcodec.engine.palette import dither_indices, fit_palette, nearest_indices


class CodingMode(IntEnum):
    SCALAR8 = 0
    UNIFORM = 1
    PALETTE = 2

    @classmethod
    def parse(cls, name: str | CodingMode) -> CodingMode:
        if isinstance(name, CodingMode):
            return name
        try:
            return cls[str(name).upper()]
        except KeyError:
            raise ValueError(f"unknown mode {name!r}; choose scalar8, uniform or palette") from None

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class CodedLatents:
    """One image's latents as coded: mode parameters and uncompressed symbol planes."""

    params: bytes
    planes: bytes


def _planes(symbols: torch.Tensor) -> bytes:
    """Channel-major bytes of a symbol tensor; multi-byte symbols are split into byte planes (low first)."""
    array = symbols.contiguous().cpu().numpy()
    if array.dtype.itemsize == 1:
        return array.tobytes()
    as_bytes = array.astype(array.dtype.newbyteorder("<"), copy=False).view(np.uint8)
    return np.ascontiguousarray(np.moveaxis(as_bytes.reshape(*array.shape, array.dtype.itemsize), -1, 0)).tobytes()


def _symbols(planes: bytes, dtype: np.dtype, shape: tuple[int, ...]) -> torch.Tensor:
    """Inverse of :func:`_planes`."""
    dtype = np.dtype(dtype)
    raw = np.frombuffer(planes, dtype=np.uint8)
    if dtype.itemsize > 1:
        raw = np.ascontiguousarray(np.moveaxis(raw.reshape(dtype.itemsize, *shape), 0, -1))
    return torch.from_numpy(raw.view(dtype.newbyteorder("<")).astype(dtype).reshape(shape))


def _to_half(values: torch.Tensor, down: bool) -> torch.Tensor:
    """Round float32 to the float16 neighbour below (``down``) or above ``values``."""
    half = values.clamp(-60000, 60000).half()
    limit = torch.full_like(half, -65504.0 if down else 65504.0)
    wrong_side = half.float() > values if down else half.float() < values
    return torch.where(wrong_side, torch.nextafter(half, limit), half)


def _channel_ranges(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-(image, channel) float16-exact ``lo <= min`` and ``hi >= max`` (``hi > lo``) of ``[B, C, ...]``."""
    flat = x.flatten(2).float()
    lo = _to_half(flat.amin(2), down=True)
    hi = _to_half(flat.amax(2), down=False)
    hi = torch.where(hi > lo, hi, torch.nextafter(lo, torch.full_like(lo, 65504.0)))
    return lo.float(), hi.float()


def _pack_ranges(lo: torch.Tensor, hi: torch.Tensor) -> bytes:
    return torch.stack([lo, hi]).half().cpu().numpy().astype("<f2").tobytes()


def _unpack_ranges(data: bytes, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    if len(data) != 4 * channels:
        raise CorruptStreamError(f"expected {4 * channels} bytes of channel ranges, got {len(data)}")
    pairs = torch.from_numpy(np.frombuffer(data, dtype="<f2").astype(np.float32)).reshape(2, channels)
    lo, hi = pairs[0], pairs[1]
    if not (torch.isfinite(pairs).all() and (hi > lo).all()):
        raise CorruptStreamError("channel ranges are not finite and increasing")
    return lo, hi


class Scalar8Coder:
    """Per-channel 8-bit quantization between each channel's min and max (near-lossless latents)."""

    mode = CodingMode.SCALAR8

    def __init__(self, backend: str | None = None, device: torch.device | str = "cpu") -> None:
        self.backend, self.device = backend, torch.device(device)

    def encode(self, latents: torch.Tensor) -> list[CodedLatents]:
        lo, hi = _channel_ranges(latents)
        q = kernels.affine_quantize(latents, lo, (hi - lo) / 255, 0, 255, torch.uint8, self.backend)
        return [CodedLatents(_pack_ranges(lo[i], hi[i]), _planes(q[i])) for i in range(q.shape[0])]

    def planes_size(self, params: bytes, shape: tuple[int, int, int]) -> int:
        return shape[0] * shape[1] * shape[2]

    def decode(self, params: list[bytes], planes: list[bytes], shape: tuple[int, int, int]) -> torch.Tensor:
        ranges = [_unpack_ranges(p, shape[0]) for p in params]
        lo = torch.stack([r[0] for r in ranges])
        hi = torch.stack([r[1] for r in ranges])
        q = torch.stack([_symbols(p, np.uint8, shape) for p in planes]).to(self.device)
        lo, hi = lo.to(self.device), hi.to(self.device)
        return kernels.affine_dequantize(q, lo, (hi - lo) / 255, self.backend)


_UNIFORM_PARAMS = struct.Struct("<fB")
MIN_STEP, MAX_STEP = 1e-3, 64.0


def uniform_step_for_quality(quality: float) -> float:
    """Quality 0..100 -> step: 0 -> 2.0, 50 -> 0.5, 100 -> 0.125 (geometric)."""
    return 0.5 * 2 ** ((50 - quality) / 25)


class UniformCoder:
    """Uniform scalar quantization with one step size to small signed integers (int8, or int16 if needed)."""

    mode = CodingMode.UNIFORM

    def __init__(self, step: float, backend: str | None = None, device: torch.device | str = "cpu") -> None:
        if not MIN_STEP <= step <= MAX_STEP:
            raise ValueError(f"step must be in [{MIN_STEP}, {MAX_STEP}], got {step}")
        self.step = float(np.float32(step))
        self.backend, self.device = backend, torch.device(device)

    def encode(self, latents: torch.Tensor) -> list[CodedLatents]:
        b, c = latents.shape[:2]
        coded = []
        for i in range(b):  # symbol width is chosen per image
            image = latents[i : i + 1]
            peak = int(torch.ceil(image.abs().amax() / self.step))
            width, dtype = (1, torch.int8) if peak <= 127 else (2, torch.int16)
            limit = 127 if width == 1 else 32767
            zeros = torch.zeros((1, c), device=latents.device)
            q = kernels.affine_quantize(image, zeros, zeros + self.step, -limit, limit, dtype, self.backend)
            coded.append(CodedLatents(_UNIFORM_PARAMS.pack(self.step, width), _planes(q[0])))
        return coded

    @staticmethod
    def _parse(params: bytes) -> tuple[float, int]:
        if len(params) != _UNIFORM_PARAMS.size:
            raise CorruptStreamError("bad uniform parameters")
        step, width = _UNIFORM_PARAMS.unpack(params)
        if not (np.isfinite(step) and MIN_STEP <= step <= MAX_STEP) or width not in (1, 2):
            raise CorruptStreamError(f"bad uniform parameters: step {step}, symbol width {width}")
        return step, width

    def planes_size(self, params: bytes, shape: tuple[int, int, int]) -> int:
        return self._parse(params)[1] * shape[0] * shape[1] * shape[2]

    def decode(self, params: list[bytes], planes: list[bytes], shape: tuple[int, int, int]) -> torch.Tensor:
        out = []
        for p, data in zip(params, planes, strict=True):
            step, width = self._parse(p)
            q = _symbols(data, np.int8 if width == 1 else np.int16, shape)[None].to(self.device)
            zeros = torch.zeros((1, shape[0]), device=self.device)
            out.append(kernels.affine_dequantize(q, zeros, zeros + step, self.backend))
        return torch.cat(out)


_PALETTE_PARAMS = struct.Struct("<H")
MAX_PALETTE = 4096


def palette_size_for_quality(quality: float) -> int:
    """Quality 0..100 -> palette size: 0 -> 2 entries, 100 -> 256 (geometric)."""
    return round(2 ** (1 + 7 * quality / 100))


class PaletteCoder:
    """A per-image palette of latent vectors (k-means), 8-bit stored, with Floyd-Steinberg dithered indices."""

    mode = CodingMode.PALETTE

    def __init__(
        self, size: int = 256, dither: bool = True, backend: str | None = None, device: torch.device | str = "cpu"
    ) -> None:
        if not 2 <= size <= MAX_PALETTE:
            raise ValueError(f"palette size must be in [2, {MAX_PALETTE}], got {size}")
        self.size, self.dither, self.backend, self.device = size, dither, backend, torch.device(device)

    def encode(self, latents: torch.Tensor) -> list[CodedLatents]:
        b, _c = latents.shape[:2]
        fitted = [fit_palette(latents[i].flatten(1).T, self.size, seed=i) for i in range(b)]
        k = fitted[0].shape[0]
        raw = torch.stack(fitted)  # [B, K, C]
        as_planes = raw.permute(0, 2, 1)[..., None]  # [B, C, K, 1]: one plane per channel
        lo, hi = _channel_ranges(as_planes)
        symbols = kernels.affine_quantize(as_planes, lo, (hi - lo) / 255, 0, 255, torch.uint8, self.backend)
        palettes = kernels.affine_dequantize(symbols, lo, (hi - lo) / 255, self.backend)[..., 0].permute(0, 2, 1)
        choose = dither_indices if self.dither else nearest_indices
        indices = choose(latents, palettes.contiguous(), self.backend)
        index_dtype = torch.uint8 if k <= 256 else torch.int16
        return [
            CodedLatents(
                _PALETTE_PARAMS.pack(k) + _pack_ranges(lo[i], hi[i]),
                _planes(symbols[i, :, :, 0]) + _planes(indices[i].to(index_dtype)),
            )
            for i in range(b)
        ]

    @staticmethod
    def _parse(params: bytes, channels: int) -> tuple[int, torch.Tensor, torch.Tensor]:
        if len(params) != _PALETTE_PARAMS.size + 4 * channels:
            raise CorruptStreamError("bad palette parameters")
        (k,) = _PALETTE_PARAMS.unpack_from(params)
        if not 1 <= k <= MAX_PALETTE:
            raise CorruptStreamError(f"bad palette size {k}")
        lo, hi = _unpack_ranges(params[_PALETTE_PARAMS.size :], channels)
        return k, lo, hi

    def planes_size(self, params: bytes, shape: tuple[int, int, int]) -> int:
        c, h, w = shape
        k = self._parse(params, c)[0]
        return c * k + h * w * (1 if k <= 256 else 2)

    def decode(self, params: list[bytes], planes: list[bytes], shape: tuple[int, int, int]) -> torch.Tensor:
        c, h, w = shape
        out = []
        for p, data in zip(params, planes, strict=True):
            k, lo, hi = self._parse(p, c)
            symbols = _symbols(data[: c * k], np.uint8, (c, k))[None, :, :, None].to(self.device)
            lo, hi = lo.to(self.device), hi.to(self.device)
            palette = kernels.affine_dequantize(symbols, lo[None], ((hi - lo) / 255)[None], self.backend)
            indices = _symbols(data[c * k :], np.uint8 if k <= 256 else np.int16, (h, w)).to(self.device, torch.int32)
            if int(indices.min()) < 0 or int(indices.max()) >= k:
                raise CorruptStreamError("palette index out of range")
            out.append(kernels.palette_lookup(indices[None], palette[..., 0].permute(0, 2, 1), self.backend))
        return torch.cat(out)


Coder = Scalar8Coder | UniformCoder | PaletteCoder


def decoder_for(mode: CodingMode, backend: str | None = None, device: torch.device | str = "cpu") -> Coder:
    """A coder able to decode ``mode`` (its knobs are read from each stream's parameters)."""
    if mode is CodingMode.SCALAR8:
        return Scalar8Coder(backend, device)
    if mode is CodingMode.UNIFORM:
        return UniformCoder(1.0, backend, device)
    return PaletteCoder(256, True, backend, device)
