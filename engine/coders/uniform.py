"""``uniform``: symbols ``round(latent / step)`` as int8 (int16 when needed); one step for every channel, or the
stream's step times a table of weights per channel (:mod:`~latentcodec.engine.coders.step_weights`)."""

from __future__ import annotations

import numpy as np
import torch

from latentcodec.engine.coders.base import FLOAT32, CodedBatch, Coder, LatentShape, Layout, register_coder
from latentcodec.engine.coders.planes import as_bytes, rms_error, to_device
from latentcodec.engine.coders.step_weights import TABLES, channel_steps, table_for
from latentcodec.engine.errors import CorruptStreamError
from latentcodec.engine.format import MAX_STEP, MIN_STEP, UNIFORM_WEIGHTED, CodingMode, uniform_params
from latentcodec.engine.stage_timer import staged
from latentcodec.kernels import ops as kernels


@register_coder
class UniformCoder(Coder):
    """Symbols as int16 byte planes, clamped to +-32767; an image whose symbols all fit in int8 (most) is stored
    with width 1, and its low-byte plane alone is exactly its int8 plane."""

    mode = CodingMode.UNIFORM

    @staged("quantize", device=True)
    def encode(self, latents: torch.Tensor, options) -> CodedBatch:
        """With ``options.channel_steps``, a step per channel from the table for this many channels, if any."""
        b, c = latents.shape[:2]
        step, table = float(np.float32(options.step_value)), self.table(options, c)  # the step as the header has it
        steps = to_device(self.encode_steps(options, b, c), latents.device)
        grid = steps[:, :, None, None]
        peaks = latents.detach().float().abs().div(grid).flatten(1).amax(1).ceil_()
        widths = torch.where(peaks <= 127, 1, 2).to(torch.uint8)
        planes = kernels.quantize_planes(latents, torch.zeros_like(steps), steps, -32767, 32767, 2, self.backend)
        noise = rms_error(latents, latents.float().div(grid).round_().clamp_(-32767, 32767).mul_(grid))
        tables = [torch.full((b,), table, dtype=torch.uint8, device=latents.device)] if table else []
        return CodedBatch(as_bytes(steps.new_full((b,), step), *tables, widths), planes, noise)

    @staticmethod
    def table(options, channels: int) -> int:
        """The step table streams of ``options`` use for latents of ``channels`` channels (0: none)."""
        return table_for(channels) if options.channel_steps else 0

    def encode_steps(self, options, batch: int, channels: int) -> torch.Tensor:
        """The step per channel ``[batch, channels]`` (host) that :meth:`encode` quantizes with."""
        step = torch.full((batch,), float(np.float32(options.step_value)))
        return channel_steps(step, [self.table(options, channels)] * batch, channels)

    @staticmethod
    def _parse(params: bytes) -> tuple[float, int, int]:
        """(step, step table, symbol width) of one stream."""
        if (parsed := uniform_params(params)) is None:
            raise CorruptStreamError("bad uniform parameters")
        step, table, width = parsed
        bad_table = len(params) == UNIFORM_WEIGHTED.size and table not in TABLES
        if not (np.isfinite(step) and MIN_STEP <= step <= MAX_STEP) or width not in (1, 2) or bad_table:
            raise CorruptStreamError(f"bad uniform parameters: step {step}, table {table}, symbol width {width}")
        return step, table, width

    def planes_size(self, params: bytes, shape: LatentShape) -> int:
        return self._parse(params)[2] * shape[0] * shape[1] * shape[2]

    def steps(self, params: list[bytes], channels: int) -> torch.Tensor:
        """Each stream's step per channel ``[B, channels]`` on the coder's device."""
        parsed = [self._parse(p) for p in params]
        steps = torch.tensor([step for step, _, _ in parsed], dtype=torch.float32)
        return to_device(channel_steps(steps, [table for _, table, _ in parsed], channels), self.device)

    @staged("dequantize", device=True)
    def decode(
        self, params: list[bytes], planes: torch.Tensor, shape: LatentShape, out: Layout = FLOAT32
    ) -> torch.Tensor:
        width = self._parse(params[0])[2]
        if any(self._parse(p)[2] != width for p in params):
            raise ValueError("a decode batch must hold streams of one symbol width")
        steps = self.steps(params, shape[0])
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
