"""A learned upscaler for the downscaled operating points.

Rate control spends low rates on downscaled images; the decoder draws them small and the codec resizes them to
the image's size. Bicubic resizing (what every model does) blurs; :class:`Upscaler` adds a residual to it, drawn
by a few convolutions from the bicubic result at half its resolution (pixel unshuffle), told the resize ratio.
Its last layer starts at zero, so before training it is exactly bicubic.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from latentcodec.engine.models.bicubic import Grid, Span, bicubic_block, reads


def bicubic(small: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``[B, 3, h, w]`` -> ``[B, 3, H, W]``, not clamped: how the codec resizes decoded images."""
    return F.interpolate(small, size=size, mode="bicubic")


class Upscaler(nn.Module):
    """``(decoded [B, 3, h, w], (H, W)) -> [B, 3, H, W]``: bicubic plus a learned residual (not clamped)."""

    def __init__(self, width: int = 48, depth: int = 4) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(13, width, 3, padding=1), nn.ReLU()]
        for _ in range(depth):
            layers += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU()]
        layers.append(nn.Conv2d(width, 12, 3, padding=1))
        nn.init.zeros_(layers[-1].weight)
        nn.init.zeros_(layers[-1].bias)
        self.body = nn.Sequential(*layers)

    def forward(self, small: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        ratio = math.sqrt(size[0] * size[1] / (small.shape[-2] * small.shape[-1]))
        base = bicubic(small, size)
        return base + self.residual(base, ratio)

    def residual(self, base: torch.Tensor, ratio: float | torch.Tensor) -> torch.Tensor:
        """What the upscaler adds to bicubic upscales ``base`` ``[B, 3, H, W]`` made at ``ratio`` (output side over
        input side; one, or ``[B]``)."""
        height, width = base.shape[-2:]
        x = F.pixel_unshuffle(F.pad(base, (0, width % 2, 0, height % 2), mode="replicate"), 2)
        if isinstance(ratio, torch.Tensor):
            log_ratio = ratio.to(x).log().reshape(-1, 1, 1, 1).expand(x.shape[0], 1, *x.shape[-2:])
        else:  # a fill, no host-to-device copy: CUDA-graph safe
            log_ratio = x.new_full((x.shape[0], 1, *x.shape[-2:]), math.log(ratio))
        x = torch.cat([x, log_ratio], dim=1)
        return F.pixel_shuffle(self.body(x), 2)[..., :height, :width]

    @property
    def margin(self) -> int:
        """Output samples on each side of a block that its residual reads: one half-resolution sample per conv."""
        return 2 * sum(isinstance(layer, nn.Conv2d) for layer in self.body)

    def reads(self, n_in: int, n_out: int, span: Span) -> torch.Tensor:
        """The input samples that outputs ``span`` read, along one side of ``n_in`` resized to ``n_out``."""
        return reads(n_in, n_out, _widened(span, n_out, self.margin))

    def block(self, source: Grid, size: tuple[int, int], rows: Span, cols: Span) -> torch.Tensor:
        """Block ``rows x cols`` of ``self(image, size)`` from the image's samples in ``source`` (those :meth:`reads`
        names). Blocks start at even rows and columns; the residual sees ``margin`` more on each side, so it equals
        the whole image's (the bicubic base agrees to about 1e-6: :mod:`~latentcodec.engine.models.bicubic`)."""
        wide_rows, wide_cols = _widened(rows, size[0], self.margin), _widened(cols, size[1], self.margin)
        base = bicubic_block(source, size, wide_rows, wide_cols)
        ratio = math.sqrt(size[0] * size[1] / (source.size[0] * source.size[1]))
        top, left = rows[0] - wide_rows[0], cols[0] - wide_cols[0]
        inner = (..., slice(top, top + rows[1] - rows[0]), slice(left, left + cols[1] - cols[0]))
        return base[inner] + self.residual(base, ratio)[inner]


def _widened(span: Span, length: int, margin: int) -> Span:
    return max(0, span[0] - margin), min(length, span[1] + margin)
