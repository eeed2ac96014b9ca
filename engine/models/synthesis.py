"""A synthesis stage for the downscaled operating points: an upscaler with real capacity.

:class:`Synthesizer` draws full resolution from the decode of a downscaled stream as :class:`~latentcodec.engine.
models.upscaler.Upscaler` does (bicubic plus a learned residual), with a small U-Net in place of a few convolutions:
three resolutions (1/2, 1/4 and 1/8 of the output), residual blocks, skips. It is told the resize ratio and the
stream's noise level. Its last layer starts at zero: before training it is exactly bicubic.
"""

from __future__ import annotations

from torch import nn

from latentcodec.engine.models.upscaler import Upscaler

RECEPTIVE = 78  # output pixels a residual sample reads on each side (each 3x3 conv: its resolution's step)


class Residual(nn.Module):
    """``x + conv(relu(conv(x)))``."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1)
        )

    def forward(self, x):
        return x + self.conv(x)


class SynthesisNet(nn.Module):
    """The U-Net: ``[B, inputs, h, w] -> [B, outputs, h, w]`` (``h``, ``w`` multiples of 4)."""

    def __init__(self, inputs: int, outputs: int, widths: tuple[int, int, int]) -> None:
        super().__init__()
        w0, w1, w2 = widths
        self.head = nn.Sequential(nn.Conv2d(inputs, w0, 3, padding=1), nn.ReLU(), Residual(w0))
        self.down1 = nn.Sequential(nn.Conv2d(w0, w1, 3, stride=2, padding=1), nn.ReLU(), Residual(w1))
        self.down2 = nn.Sequential(nn.Conv2d(w1, w2, 3, stride=2, padding=1), nn.ReLU(), Residual(w2), Residual(w2))
        self.up2 = nn.Sequential(nn.Conv2d(w2, 4 * w1, 3, padding=1), nn.PixelShuffle(2))
        self.mix1 = Residual(w1)
        self.up1 = nn.Sequential(nn.Conv2d(w1, 4 * w0, 3, padding=1), nn.PixelShuffle(2))
        self.mix0 = Residual(w0)
        self.tail = nn.Conv2d(w0, outputs, 3, padding=1)
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)

    def forward(self, x):
        s0 = self.head(x)
        s1 = self.down1(s0)
        y1 = self.mix1(s1 + self.up2(self.down2(s1)))
        return self.tail(self.mix0(s0 + self.up1(y1)).relu())


class Synthesizer(Upscaler):
    """``(decoded [B, 3, h, w], (H, W), noise level) -> [B, 3, H, W]``: bicubic plus the U-Net's residual."""

    align = 8  # the U-Net's coarsest grid, in output pixels
    told_level = True
    scales = (*Upscaler.scales, 0.25)  # it learned to draw from a quarter of the size too

    def __init__(self, widths: tuple[int, int, int] = (48, 96, 192)) -> None:
        nn.Module.__init__(self)
        self.body = SynthesisNet(14, 12, widths)  # 12 half-resolution RGB planes, ratio, level

    @property
    def margin(self) -> int:
        """The receptive field rounded up to the ``align`` grid, and one more step of it (the grid's padding)."""
        return -(-RECEPTIVE // self.align) * self.align + self.align
