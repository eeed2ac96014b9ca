"""FLUX.2 latents between the ``flux2`` space and the FLUX.2 pipelines' (pure torch, no diffusers).

The ``flux2`` space holds the VAE's raw latents ``[B, 32, h, w]`` at /8: what ``taef2``, ``taef2-q2`` and ``flux2-vae``
encode and decode. diffusers' ``Flux2Pipeline`` (and its Klein variants) work on 2x2 patches of them, ``[B, 128, h/2,
w/2]``, normalized by the VAE's batch-norm statistics (``vae.bn.running_mean``/``running_var``, eps
``vae.config.batch_norm_eps``), and pack those into tokens ``[B, h/2 * w/2, 128]`` row by row. These functions do
the same arithmetic as the pipeline's ``_patchify_latents``, ``_encode_vae_image``, ``_unpatchify_latents`` and the
decode step of ``__call__``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class PipelineStats:
    """The FLUX.2 VAE's batch-norm statistics over patchified latents (128 channels)."""

    mean: torch.Tensor
    var: torch.Tensor
    eps: float

    @classmethod
    def of(cls, vae: nn.Module) -> PipelineStats:
        """The statistics of a diffusers ``AutoencoderKLFlux2``."""
        bn = vae.bn
        return cls(bn.running_mean.detach().clone(), bn.running_var.detach().clone(), float(vae.config.batch_norm_eps))

    def affine(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std) as ``[1, 128, 1, 1]`` on ``like``'s device and dtype."""
        mean = self.mean.view(1, -1, 1, 1).to(like.device, like.dtype)
        std = torch.sqrt(self.var.view(1, -1, 1, 1) + self.eps).to(like.device, like.dtype)
        return mean, std


def patchify(raw: torch.Tensor) -> torch.Tensor:
    """``[B, C, h, w]`` -> ``[B, 4C, h/2, w/2]`` (channel ``4c + 2i + j`` is ``raw[c]`` at offset ``(i, j)``)."""
    b, c, h, w = raw.shape
    if h % 2 or w % 2:
        raise ValueError(f"a latent grid of {h}x{w} has no 2x2 patches: FLUX.2 pipelines take even sides (images /16)")
    return raw.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(b, c * 4, h // 2, w // 2)


def unpatchify(patches: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`patchify`."""
    b, c, h, w = patches.shape
    return patches.reshape(b, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3).reshape(b, c // 4, h * 2, w * 2)


def to_pipeline(raw: torch.Tensor, stats: PipelineStats) -> torch.Tensor:
    """Latents of the ``flux2`` space ``[B, 32, h, w]`` -> the pipelines' normalized patches ``[B, 128, h/2, w/2]``."""
    patches = patchify(raw)
    mean, std = stats.affine(patches)
    return (patches - mean) / std


def from_pipeline(latents: torch.Tensor, stats: PipelineStats) -> torch.Tensor:
    """The pipelines' normalized patches ``[B, 128, h/2, w/2]`` (or tokens ``[B, h/2 * w/2, 128]`` with
    :func:`unpack` first) -> latents of the ``flux2`` space ``[B, 32, h, w]``."""
    mean, std = stats.affine(latents)
    return unpatchify(latents * std + mean)


def unpack(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Tokens ``[B, height * width, C]`` (row-major, as ``Flux2Pipeline(output_type="latent")`` returns them) ->
    ``[B, C, height, width]``; ``height``, ``width``: the patch grid (the image's sides / 16)."""
    b, n, c = tokens.shape
    if n != height * width:
        raise ValueError(f"{n} tokens are not a {height}x{width} grid")
    return tokens.permute(0, 2, 1).reshape(b, c, height, width)
