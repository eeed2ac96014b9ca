"""``uniform``: one step size for every latent, symbols ``round(latent / step)`` as int8 (int16 when needed)."""

from __future__ import annotations

import struct

import numpy as np
import torch

from latentcodec.engine.coders.base import FLOAT32, CodedBatch, Coder, LatentShape, Layout, register_coder
from latentcodec.engine.coders.planes import as_bytes, rms_error, to_device
from latentcodec.engine.errors import CorruptStreamError
from latentcodec.engine.format import MAX_STEP, MIN_STEP, CodingMode
from latentcodec.engine.stage_timer import staged
from latentcodec.kernels import ops as kernels

_PARAMS = struct.Struct("<fB")  # step (float32), symbol width in bytes


@register_coder
class UniformCoder(Coder):
    """Symbols as int16 byte planes, clamped to +-32767; an image whose symbols all fit in int8 (most) is stored
    with width 1, and its low-byte plane alone is exactly its int8 plane."""

    mode = CodingMode.UNIFORM

    @staged("quantize", device=True)
    def encode(self, latents: torch.Tensor, options) -> CodedBatch:
        step = float(np.float32(options.step_value))  # as the header stores it
        b, c = latents.shape[:2]
        peaks = latents.detach().flatten(1).abs().amax(1).float().div_(step).ceil_()
        widths = torch.where(peaks <= 127, 1, 2).to(torch.uint8)
        steps = torch.full((b, c), step, device=latents.device)
        planes = kernels.quantize_planes(latents, torch.zeros_like(steps), steps, -32767, 32767, 2, self.backend)
        noise = rms_error(latents, latents.float().div(step).round_().clamp_(-32767, 32767).mul_(step))
        return CodedBatch(as_bytes(steps[:, 0], widths), planes, noise)

    @staticmethod
    def _parse(params: bytes) -> tuple[float, int]:
        if len(params) != _PARAMS.size:
            raise CorruptStreamError("bad uniform parameters")
        step, width = _PARAMS.unpack(params)
        if not (np.isfinite(step) and MIN_STEP <= step <= MAX_STEP) or width not in (1, 2):
            raise CorruptStreamError(f"bad uniform parameters: step {step}, symbol width {width}")
        return step, width

    def planes_size(self, params: bytes, shape: LatentShape) -> int:
        return self._parse(params)[1] * shape[0] * shape[1] * shape[2]

    @staged("dequantize", device=True)
    def decode(
        self, params: list[bytes], planes: torch.Tensor, shape: LatentShape, out: Layout = FLOAT32
    ) -> torch.Tensor:
        parsed = [self._parse(p) for p in params]
        width = parsed[0][1]
        if any(w != width for _, w in parsed):
            raise ValueError("a decode batch must hold streams of one symbol width")
        steps = to_device(torch.tensor([s for s, _ in parsed]), self.device)[:, None].expand(-1, shape[0])
        zeros = torch.zeros_like(steps)
        return kernels.dequantize_planes(
            planes,
            zeros,
            steps,
            shape,
            width,
            True,
            dtype=out.dtype,
            memory_format=out.memory_format,
            backend=self.backend,
        )
