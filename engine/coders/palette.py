"""``palette``: a per-image palette of latent vectors (k-means), 8-bit stored, with Floyd-Steinberg dithered
indices into it (or nearest-entry indices without dithering)."""

from __future__ import annotations

import struct

import torch

from latentcodec.engine.coders.base import FLOAT32, CodedBatch, Coder, LatentShape, Layout, register_coder
from latentcodec.engine.coders.palette_fit import dither_indices, fit_palette, nearest_indices
from latentcodec.engine.coders.planes import as_bytes, channel_ranges, rms_error, to_device, unpack_ranges
from latentcodec.engine.errors import CorruptStreamError
from latentcodec.engine.format import MAX_PALETTE, CodingMode
from latentcodec.engine.stage_timer import staged
from latentcodec.kernels import ops as kernels

_PARAMS = struct.Struct("<H")  # palette entries; then each channel's float16 lo, hi


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


@register_coder
class PaletteCoder(Coder):
    """Parameters: the palette size and each channel's float16 range; symbols: the palette's 8-bit entries, one
    plane per channel, then the indices (one byte each up to 256 entries, else two)."""

    mode = CodingMode.PALETTE

    def fit(self, latents: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Each image's palette of at most ``size`` entries as stored: its 8-bit symbols ``[B, C, K, 1]``, channel
        ranges ``lo``, ``hi`` ``[B, C]`` and the palette they decode to, ``[B, K, C]``."""
        b, c = latents.shape[:2]
        fitted = [fit_palette(latents[i].flatten(1).T, size) for i in range(b)]  # same seed: batch-invariant
        k = fitted[0].shape[0]
        as_planes = torch.stack(fitted).permute(0, 2, 1)[..., None]  # [B, C, K, 1]: one plane per channel
        lo, hi = channel_ranges(as_planes)
        scale = (hi - lo) / 255
        symbols = kernels.quantize_planes(as_planes, lo, scale, 0, 255, 1, self.backend)
        palettes = kernels.dequantize_planes(symbols, lo, scale, (c, k, 1), 1, False, backend=self.backend)
        return symbols, lo, hi, palettes[..., 0].permute(0, 2, 1).contiguous()

    def indices(self, latents: torch.Tensor, palettes: torch.Tensor, dither: bool = True) -> torch.Tensor:
        """Palette indices ``[B, H, W]`` of latents ``[B, C, H, W]``: dithered or nearest."""
        return (dither_indices if dither else nearest_indices)(latents, palettes, self.backend)

    @staged("quantize", device=True)
    def encode(self, latents: torch.Tensor, options) -> CodedBatch:
        b = latents.shape[0]
        symbols, lo, hi, palettes = self.fit(latents, options.palette_size_value)
        k = palettes.shape[1]
        indices = self.indices(latents, palettes, options.dither)
        noise = rms_error(latents, kernels.palette_lookup(indices, palettes, self.backend))
        planes = torch.cat([symbols, _index_planes(indices, _index_bytes(k), self.backend)], dim=1)
        sizes = torch.full((b,), k, dtype=torch.int16, device=latents.device)
        return CodedBatch(as_bytes(sizes, lo.half(), hi.half()), planes, noise)

    @staticmethod
    def _parse(params: bytes, channels: int) -> tuple[int, torch.Tensor, torch.Tensor]:
        if len(params) != _PARAMS.size + 4 * channels:
            raise CorruptStreamError("bad palette parameters")
        (k,) = _PARAMS.unpack_from(params)
        if not 1 <= k <= MAX_PALETTE:
            raise CorruptStreamError(f"bad palette size {k}")
        lo, hi = unpack_ranges(params[_PARAMS.size :], channels)
        return k, lo, hi

    def planes_size(self, params: bytes, shape: LatentShape) -> int:
        c, h, w = shape
        k = self._parse(params, c)[0]
        return c * k + h * w * _index_bytes(k)

    @staged("dequantize", device=True)
    def decode(
        self, params: list[bytes], planes: torch.Tensor, shape: LatentShape, out: Layout = FLOAT32
    ) -> torch.Tensor:
        c, h, w = shape
        latents = []
        for i, p in enumerate(params):  # palette sizes may differ between images
            k, lo, hi = self._parse(p, c)
            lo, scale = to_device(lo, self.device)[None], to_device((hi - lo) / 255, self.device)[None]
            row = planes[i : i + 1]
            palette = kernels.dequantize_planes(row[:, : c * k], lo, scale, (c, k, 1), 1, False, backend=self.backend)
            nbytes = _index_bytes(k)
            indices = _indices(row[:, c * k : c * k + h * w * nbytes], (h, w), nbytes, self.backend)
            if int(indices.max()) >= k:
                raise CorruptStreamError("palette index out of range")
            latents.append(kernels.palette_lookup(indices, palette[..., 0].permute(0, 2, 1), self.backend))
        return torch.cat(latents).to(dtype=out.dtype, memory_format=out.memory_format)
