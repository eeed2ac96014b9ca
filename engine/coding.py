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


@dataclass
class CodedBatch:
    """A batch of coded latents, still on the coder's device (so coding never waits for the device).

    ``params`` is ``[B, p]`` uint8: each row is one image's mode parameters as stored in the header.
    ``planes`` is ``[B, n]`` uint8: each row starts with the image's channel-major byte planes, exactly the
    bytes the entropy stage compresses; rows may be longer (``planes_size`` of the parameters says how long).
    ``noise`` is ``[B]`` float32: each image's RMS quantization error per latent (what a denoiser is told).
    """

    params: torch.Tensor
    planes: torch.Tensor
    noise: torch.Tensor


def rms_error(latents: torch.Tensor, quantized: torch.Tensor) -> torch.Tensor:
    """RMS difference per image ``[B]`` (float32)."""
    return (quantized.float() - latents.float()).square_().flatten(1).mean(1).sqrt_()


def to_device(host: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on ``device``; through pinned memory for CUDA, so the copy never stalls the stream."""
    return host.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else host.to(device)


def planes_tensor(rows: list[bytes], device: torch.device) -> torch.Tensor:
    """Equal-length byte strings -> ``[B, n]`` uint8 on ``device``."""
    return to_device(torch.frombuffer(bytearray().join(rows), dtype=torch.uint8).reshape(len(rows), -1), device)


def _as_bytes(*columns: torch.Tensor) -> torch.Tensor:
    """Per-image values ``[B, ...]`` of any dtypes -> their little-endian bytes side by side, ``[B, p]`` uint8."""
    dense = [c.new_empty(c.shape).copy_(c) for c in columns]  # fresh strides: view() needs a unit last stride
    return torch.cat([c.view(torch.uint8).reshape(c.shape[0], -1) for c in dense], dim=1)


def _index_bytes(palette_size: int) -> int:
    """Bytes per stored palette index: one up to 256 entries, else two."""
    return 1 if palette_size <= 256 else 2


def _index_planes(indices: torch.Tensor, nbytes: int, backend: str | None) -> torch.Tensor:
    """Palette indices ``[B, H, W]`` -> ``[B, nbytes * H * W]`` byte planes (exact: indices < 2**24)."""
    b = indices.shape[0]
    ones = torch.ones((b, 1), device=indices.device)
    zeros = torch.zeros_like(ones)
    return kernels.quantize_planes(indices[:, None].float(), zeros, ones, 0, MAX_PALETTE, nbytes, backend)


def _indices(planes: torch.Tensor, shape: tuple[int, int], nbytes: int, backend: str | None) -> torch.Tensor:
    """Inverse of :func:`_index_planes`: int32 ``[B, H, W]``."""
    ones = torch.ones((planes.shape[0], 1), device=planes.device)
    values = kernels.dequantize_planes(
        planes, torch.zeros_like(ones), ones, (1, *shape), nbytes, False, backend=backend
    )
    return values[:, 0].to(torch.int32)


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

    def encode(self, latents: torch.Tensor) -> CodedBatch:
        lo, hi = _channel_ranges(latents)
        scale = ((hi - lo) / 255)[..., None, None]
        levels = ((latents.float() - lo[..., None, None]) / scale).round_().clamp_(0, 255)
        noise = rms_error(latents, levels * scale + lo[..., None, None])
        planes = kernels.quantize_planes(latents, lo, (hi - lo) / 255, 0, 255, 1, self.backend)
        return CodedBatch(_as_bytes(lo.half(), hi.half()), planes, noise)

    def planes_size(self, params: bytes, shape: tuple[int, int, int]) -> int:
        return shape[0] * shape[1] * shape[2]

    def decode(
        self,
        params: list[bytes],
        planes: torch.Tensor,
        shape: tuple[int, int, int],
        dtype: torch.dtype = torch.float32,
        memory_format: torch.memory_format = torch.contiguous_format,
    ) -> torch.Tensor:
        ranges = [_unpack_ranges(p, shape[0]) for p in params]
        lo = to_device(torch.stack([r[0] for r in ranges]), self.device)
        hi = to_device(torch.stack([r[1] for r in ranges]), self.device)
        return kernels.dequantize_planes(
            planes, lo, (hi - lo) / 255, shape, 1, False, dtype=dtype, memory_format=memory_format, backend=self.backend
        )


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

    def encode(self, latents: torch.Tensor) -> CodedBatch:
        """Symbols as int16 byte planes, clamped to +-32767; an image whose symbols all fit in int8 (most) is
        stored with width 1, and its low-byte plane alone is exactly its int8 plane."""
        b, c = latents.shape[:2]
        peaks = latents.detach().flatten(1).abs().amax(1).float().div_(self.step).ceil_()
        widths = torch.where(peaks <= 127, 1, 2).to(torch.uint8)
        steps = torch.full((b, c), self.step, device=latents.device)
        planes = kernels.quantize_planes(latents, torch.zeros_like(steps), steps, -32767, 32767, 2, self.backend)
        noise = rms_error(latents, latents.float().div(self.step).round_().clamp_(-32767, 32767).mul_(self.step))
        return CodedBatch(_as_bytes(steps[:, 0], widths), planes, noise)

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

    def decode(
        self,
        params: list[bytes],
        planes: torch.Tensor,
        shape: tuple[int, int, int],
        dtype: torch.dtype = torch.float32,
        memory_format: torch.memory_format = torch.contiguous_format,
    ) -> torch.Tensor:
        parsed = [self._parse(p) for p in params]
        width = parsed[0][1]
        if any(w != width for _, w in parsed):
            raise ValueError("a decode batch must hold streams of one symbol width")
        steps = to_device(torch.tensor([s for s, _ in parsed]), self.device)[:, None].expand(-1, shape[0])
        zeros = torch.zeros_like(steps)
        return kernels.dequantize_planes(
            planes, zeros, steps, shape, width, True, dtype=dtype, memory_format=memory_format, backend=self.backend
        )


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

    def fit(self, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Each image's palette as stored: its 8-bit symbols ``[B, C, K, 1]``, channel ranges ``lo``, ``hi``
        ``[B, C]`` and the palette they decode to, ``[B, K, C]``."""
        b, c = latents.shape[:2]
        fitted = [fit_palette(latents[i].flatten(1).T, self.size) for i in range(b)]  # same seed: batch-invariant
        k = fitted[0].shape[0]
        as_planes = torch.stack(fitted).permute(0, 2, 1)[..., None]  # [B, C, K, 1]: one plane per channel
        lo, hi = _channel_ranges(as_planes)
        scale = (hi - lo) / 255
        symbols = kernels.quantize_planes(as_planes, lo, scale, 0, 255, 1, self.backend)
        palettes = kernels.dequantize_planes(symbols, lo, scale, (c, k, 1), 1, False, backend=self.backend)
        return symbols, lo, hi, palettes[..., 0].permute(0, 2, 1).contiguous()

    def indices(self, latents: torch.Tensor, palettes: torch.Tensor) -> torch.Tensor:
        """Palette indices ``[B, H, W]`` of latents ``[B, C, H, W]``: dithered or nearest."""
        return (dither_indices if self.dither else nearest_indices)(latents, palettes, self.backend)

    def encode(self, latents: torch.Tensor) -> CodedBatch:
        b = latents.shape[0]
        symbols, lo, hi, palettes = self.fit(latents)
        k = palettes.shape[1]
        indices = self.indices(latents, palettes)
        noise = rms_error(latents, kernels.palette_lookup(indices, palettes, self.backend))
        planes = torch.cat([symbols, _index_planes(indices, _index_bytes(k), self.backend)], dim=1)
        sizes = torch.full((b,), k, dtype=torch.int16, device=latents.device)
        return CodedBatch(_as_bytes(sizes, lo.half(), hi.half()), planes, noise)

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
        return c * k + h * w * _index_bytes(k)

    def decode(
        self,
        params: list[bytes],
        planes: torch.Tensor,
        shape: tuple[int, int, int],
        dtype: torch.dtype = torch.float32,
        memory_format: torch.memory_format = torch.contiguous_format,
    ) -> torch.Tensor:
        c, h, w = shape
        out = []
        for i, p in enumerate(params):  # palette sizes may differ between images
            k, lo, hi = self._parse(p, c)
            lo, scale = to_device(lo, self.device)[None], to_device((hi - lo) / 255, self.device)[None]
            row = planes[i : i + 1]
            palette = kernels.dequantize_planes(row[:, : c * k], lo, scale, (c, k, 1), 1, False, backend=self.backend)
            nbytes = _index_bytes(k)
            indices = _indices(row[:, c * k : c * k + h * w * nbytes], (h, w), nbytes, self.backend)
            if int(indices.max()) >= k:
                raise CorruptStreamError("palette index out of range")
            out.append(kernels.palette_lookup(indices, palette[..., 0].permute(0, 2, 1), self.backend))
        return torch.cat(out).to(dtype=dtype, memory_format=memory_format)


Coder = Scalar8Coder | UniformCoder | PaletteCoder


def decoder_for(mode: CodingMode, backend: str | None = None, device: torch.device | str = "cpu") -> Coder:
    """A coder able to decode ``mode`` (its knobs are read from each stream's parameters)."""
    if mode is CodingMode.SCALAR8:
        return Scalar8Coder(backend, device)
    if mode is CodingMode.UNIFORM:
        return UniformCoder(1.0, backend, device)
    return PaletteCoder(256, True, backend, device)
