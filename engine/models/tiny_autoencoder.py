"""Minimal TAESD-family tiny autoencoder (the TAEF2 layout: 32 latent channels, /8, midblock GroupNorm).

Module names follow the upstream checkpoints so their state dicts load as they are.
"""

from __future__ import annotations

import torch
from torch import nn

# Where the networks split for tiling: the encoder's midblocks (GroupNorm over the whole image) and output conv
# run whole at latent resolution; so do the decoder's input layers and midblocks. The rest is convolutions only.
ENCODER_GLOBAL_FROM = 11
DECODER_LOCAL_FROM = 6


def _conv(n_in: int, n_out: int, **kwargs) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, padding=1, **kwargs)


class Clamp(nn.Module):
    """Soft clamp of latents to (-3, 3)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x / 3) * 3


class Block(nn.Module):
    """Residual conv block; ``midblock`` adds the pooled GroupNorm branch of TAEF2's low-resolution blocks."""

    def __init__(self, n_in: int, n_out: int, midblock: bool = False) -> None:
        super().__init__()
        self.conv = nn.Sequential(_conv(n_in, n_out), nn.ReLU(), _conv(n_out, n_out), nn.ReLU(), _conv(n_out, n_out))
        self.skip = nn.Conv2d(n_in, n_out, 1, bias=False) if n_in != n_out else nn.Identity()
        self.fuse = nn.ReLU()
        self.pool = None
        if midblock:
            wide = n_in * 4
            self.pool = nn.Sequential(
                nn.Conv2d(n_in, wide, 1, bias=False),
                nn.GroupNorm(4, wide),
                nn.ReLU(),
                nn.Conv2d(wide, n_in, 1, bias=False),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool is not None:
            x = x + self.pool(x)
        return self.fuse(self.conv(x) + self.skip(x))


def tiny_encoder(latent_channels: int, midblock: bool) -> nn.Sequential:
    """Image in [0, 1] -> raw latents at 1/8 resolution."""

    def stage(mid: bool) -> list[nn.Module]:
        return [_conv(64, 64, stride=2, bias=False), *(Block(64, 64, mid) for _ in range(3))]

    return nn.Sequential(
        _conv(3, 64), Block(64, 64), *stage(False), *stage(False), *stage(midblock), _conv(64, latent_channels)
    )


def tiny_decoder(latent_channels: int, midblock: bool) -> nn.Sequential:
    """Raw latents -> image (about [0, 1]) at 8x resolution."""

    def stage(mid: bool) -> list[nn.Module]:
        return [*(Block(64, 64, mid) for _ in range(3)), nn.Upsample(scale_factor=2), _conv(64, 64, bias=False)]

    return nn.Sequential(
        Clamp(),
        _conv(latent_channels, 64),
        nn.ReLU(),
        *stage(midblock),
        *stage(False),
        *stage(False),
        Block(64, 64),
        _conv(64, 3),
    )
