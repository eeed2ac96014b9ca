"""``scalar8``: per-image, per-channel 8-bit quantization between the channel's min and max (near-lossless)."""

from __future__ import annotations

import torch

from latentcodec.engine.coders.base import FLOAT32, CodedBatch, Coder, LatentShape, Layout, register_coder
from latentcodec.engine.coders.planes import as_bytes, channel_ranges, rms_error, to_device, unpack_ranges
from latentcodec.engine.format import CodingMode
from latentcodec.engine.stage_timer import staged
from latentcodec.kernels import ops as kernels


@register_coder
class Scalar8Coder(Coder):
    """Parameters: each channel's float16 ``lo`` then ``hi``; symbols: one byte per latent."""

    mode = CodingMode.SCALAR8

    @staged("quantize", device=True)
    def encode(self, latents: torch.Tensor, options=None) -> CodedBatch:
        lo, hi = channel_ranges(latents)
        scale = ((hi - lo) / 255)[..., None, None]
        levels = ((latents.float() - lo[..., None, None]) / scale).round_().clamp_(0, 255)
        noise = rms_error(latents, levels * scale + lo[..., None, None])
        planes = kernels.quantize_planes(latents, lo, (hi - lo) / 255, 0, 255, 1, self.backend)
        return CodedBatch(as_bytes(lo.half(), hi.half()), planes, noise)

    def planes_size(self, params: bytes, shape: LatentShape) -> int:
        return shape[0] * shape[1] * shape[2]

    @staged("dequantize", device=True)
    def decode(
        self, params: list[bytes], planes: torch.Tensor, shape: LatentShape, out: Layout = FLOAT32
    ) -> torch.Tensor:
        ranges = [unpack_ranges(p, shape[0]) for p in params]
        lo = to_device(torch.stack([r[0] for r in ranges]), self.device)
        hi = to_device(torch.stack([r[1] for r in ranges]), self.device)
        return kernels.dequantize_planes(
            planes,
            lo,
            (hi - lo) / 255,
            shape,
            1,
            False,
            dtype=out.dtype,
            memory_format=out.memory_format,
            backend=self.backend,
        )
