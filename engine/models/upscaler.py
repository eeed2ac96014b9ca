"""A learned upscaler for the downscaled operating points.

Rate control spends low rates on downscaled images; the decoder draws them small and the codec resizes them to
the image's size. Bicubic resizing (what every model does) blurs; :class:`Upscaler` adds a residual to it, drawn
by a few convolutions from the bicubic result at half its resolution (pixel unshuffle), told the resize ratio.
Its last layer starts at zero, so before training it is exactly bicubic. :class:`~latentcodec.engine.models.synthesis.
Synthesizer` is its larger sibling, told the stream's noise level too.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from latentcodec.engine.models.bicubic import Grid, Span, bicubic_block, reads

Level = float | torch.Tensor | None  # a stream's noise level: one for the batch, or ``[B]``
# rate control's finer candidate scales (the best scale sits where the step that fits is near 1, and the score
# falls fast on either side: README, "Rate control"); resizers that learned them offer them all
RATE_LADDER = (1.0, 0.85, 0.71, 0.6, 0.5, 0.42, 0.35, 0.3, 0.25)


def bicubic(small: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``[B, 3, h, w]`` -> ``[B, 3, H, W]``, not clamped: how the codec resizes decoded images."""
    return F.interpolate(small, size=size, mode="bicubic")


class Upscaler(nn.Module):
    """``(decoded [B, 3, h, w], (H, W)) -> [B, 3, H, W]``: bicubic plus a learned residual (not clamped)."""

    align = 2  # blocks start at multiples of this (the half-resolution grid)
    told_level = False  # whether the residual reads the stream's noise level
    scales = (1.0, 0.71, 0.5, 0.35)  # the scales rate control tries for models that resize with it (or bicubic)

    def __init__(
        self, width: int = 48, depth: int = 4, scales: tuple[float, ...] | None = None, told_level: bool = False
    ) -> None:
        super().__init__()
        if scales is not None:
            self.scales = scales  # what it learned (the class's: taef2-q2's upscaler)
        self.told_level = told_level
        layers: list[nn.Module] = [nn.Conv2d(13 + told_level, width, 3, padding=1), nn.ReLU()]
        for _ in range(depth):
            layers += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU()]
        layers.append(nn.Conv2d(width, 12, 3, padding=1))
        nn.init.zeros_(layers[-1].weight)
        nn.init.zeros_(layers[-1].bias)
        self.body = nn.Sequential(*layers)

    def forward(self, small: torch.Tensor, size: tuple[int, int], level: Level = None) -> torch.Tensor:
        ratio = math.sqrt(size[0] * size[1] / (small.shape[-2] * small.shape[-1]))
        base = bicubic(small, size)
        return base + self.residual(base, ratio, level)

    def residual(self, base: torch.Tensor, ratio: float | torch.Tensor, level: Level = None) -> torch.Tensor:
        """What the upscaler adds to bicubic upscales ``base`` ``[B, 3, H, W]`` made at ``ratio`` (output side over
        input side) from streams of noise level ``level`` (each one value, or ``[B]``; no level: zero)."""
        height, width = base.shape[-2:]
        pad = (0, -width % self.align, 0, -height % self.align)
        x = F.pixel_unshuffle(F.pad(base, pad, mode="replicate"), 2)
        planes = [x, _plane(x, ratio, log=True)]
        if self.told_level:
            planes.append(_plane(x, 0.0 if level is None else level))
        return F.pixel_shuffle(self.body(torch.cat(planes, dim=1)), 2)[..., :height, :width]

    @property
    def margin(self) -> int:
        """Output samples on each side of a block that its residual reads: one half-resolution sample per conv."""
        return 2 * sum(isinstance(layer, nn.Conv2d) for layer in self.body)

    def reads(self, n_in: int, n_out: int, span: Span) -> torch.Tensor:
        """The input samples that outputs ``span`` read, along one side of ``n_in`` resized to ``n_out``."""
        return reads(n_in, n_out, self._widened(span, n_out))

    def block(self, source: Grid, size: tuple[int, int], rows: Span, cols: Span, level: Level = None) -> torch.Tensor:
        """Block ``rows x cols`` of ``self(image, size, level)`` from the image's samples in ``source`` (those
        :meth:`reads` names). Blocks start at multiples of ``align``; the residual sees ``margin`` more on each
        side, so it equals the whole image's (the bicubic base agrees to about 1e-6:
        :mod:`~latentcodec.engine.models.bicubic`)."""
        wide_rows, wide_cols = self._widened(rows, size[0]), self._widened(cols, size[1])
        base = bicubic_block(source, size, wide_rows, wide_cols)
        ratio = math.sqrt(size[0] * size[1] / (source.size[0] * source.size[1]))
        top, left = rows[0] - wide_rows[0], cols[0] - wide_cols[0]
        inner = (..., slice(top, top + rows[1] - rows[0]), slice(left, left + cols[1] - cols[0]))
        return base[inner] + self.residual(base, ratio, level)[inner]

    def _widened(self, span: Span, length: int) -> Span:
        """``span`` and ``margin`` more on each side, starting on the ``align`` grid."""
        return max(0, (span[0] - self.margin) // self.align * self.align), min(length, span[1] + self.margin)


def _plane(x: torch.Tensor, value: float | torch.Tensor, log: bool = False) -> torch.Tensor:
    """A ``[B, 1, h, w]`` plane like ``x``'s of ``value`` or its log (one value, or one per row)."""
    if isinstance(value, torch.Tensor):
        value = value.to(x).log() if log else value.to(x)
        return value.reshape(-1, 1, 1, 1).expand(x.shape[0], 1, *x.shape[-2:])
    # a fill, no host-to-device copy: CUDA-graph safe
    return x.new_full((x.shape[0], 1, *x.shape[-2:]), math.log(value) if log else value)
