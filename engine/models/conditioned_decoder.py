"""A tiny decoder told how noisy its latents are: TAEF2's decoder with FiLM on the quantization noise level.

The codec's latents arrive rounded, palettized or dithered; a decoder trained on float latents only draws them
badly. This one takes each image's noise level ``sigma`` (the RMS quantization error per latent, which the
encoder measures and the stream records) and modulates four of its feature maps with it (scale and shift per
channel). The modulation starts at zero, so before training it is exactly the decoder it was made from.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from latentcodec.engine.models.tiny_autoencoder import tiny_decoder

FILM_AFTER = (1, 7, 12, 17)  # the decoder's input conv and the conv after each upsampling
_FEATURES = 7
_MIN_SIGMA, _MAX_SIGMA = 1e-3, 16.0


def sigma_features(sigma: torch.Tensor) -> torch.Tensor:
    """``[B]`` noise levels -> ``[B, 7]`` smooth features of ``ln sigma``."""
    t = sigma.float().clamp(_MIN_SIGMA, _MAX_SIGMA).log()[:, None]
    waves = [f(k * t / 2) for k in (1, 2, 4) for f in (torch.sin, torch.cos)]
    return torch.cat([t / math.log(_MAX_SIGMA), *waves], dim=1)


class ConditionedTinyDecoder(nn.Module):
    """``(raw latents [B, C, h, w], sigma [B]) -> image``; ``decoder`` keeps the upstream module names."""

    def __init__(self, latent_channels: int = 32, midblock: bool = True) -> None:
        super().__init__()
        self.decoder = tiny_decoder(latent_channels, midblock)
        self.film = nn.ModuleList(nn.Linear(_FEATURES, 2 * 64) for _ in FILM_AFTER)
        for layer in self.film:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, start: int = 0, stop: int | None = None, run=None):
        """Layers ``start:stop`` of the decoder (all of them by default) on ``x``, modulated by ``sigma``; each
        layer through ``run(layer, x)`` when given."""
        features = sigma_features(sigma.reshape(-1).to(x.device)).to(x.dtype)
        for index in range(start, len(self.decoder) if stop is None else stop):
            x = self.decoder[index](x) if run is None else run(self.decoder[index], x)
            if index in FILM_AFTER:
                scale, shift = self.film[FILM_AFTER.index(index)](features)[:, :, None, None].chunk(2, dim=1)
                # in place when no gradient is taken (the same numbers, without two more feature maps)
                x = x * (1 + scale) + shift if torch.is_grad_enabled() else x.mul_(1 + scale).add_(shift)
        return x
