"""The contract every latent denoiser meets, so the engine can batch and graph-capture it like the autoencoder."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class Denoiser(Protocol):
    """An ``nn.Module`` that cleans quantized latents.

    Streams whose :meth:`schedule_key` agree run through one pass (and one CUDA graph per shape): the key holds
    whatever must be equal across a batch (the latent denoiser's coding mode, the SD U-Net's start timestep).
    """

    def schedule_key(self, noise_level: float, mode: int) -> Hashable:
        """The batching key of a stream with this noise level and coding mode."""
        ...

    def __call__(self, latents: torch.Tensor, sigma: torch.Tensor, key: Hashable) -> torch.Tensor:
        """Clean latents ``[B, C, h, w]`` from quantized ones and their noise levels ``[B]``, for streams of ``key``."""
        ...
