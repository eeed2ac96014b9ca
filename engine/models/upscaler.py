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
        log_ratio = torch.as_tensor(ratio, dtype=x.dtype, device=x.device).log().reshape(-1, 1, 1, 1)
        x = torch.cat([x, log_ratio.expand(x.shape[0], 1, *x.shape[-2:])], dim=1)
        return F.pixel_shuffle(self.body(x), 2)[..., :height, :width]
