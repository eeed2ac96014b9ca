"""The interface every autoencoder in the registry exposes to the engine."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from latentcodec.engine.format import FINGERPRINT_BYTES


@dataclass(frozen=True)
class ModelSpec:
    """What the codec must know about an autoencoder's latent space."""

    model_id: str
    latent_channels: int
    downsample: int
    image_range: tuple[float, float]  # the value range the network's image side expects
    scaling_factor: float = 1.0  # latents = (raw - shift_factor) * scaling_factor
    shift_factor: float = 0.0
    description: str = ""
    conditioned: bool = False  # the decoder takes each image's quantization noise level (streams record it)


class LatentAutoencoder(nn.Module):
    """Wraps an encoder/decoder pair: images in [0, 1] <-> scaled latents, plus a weights fingerprint."""

    def __init__(self, spec: ModelSpec, encoder: nn.Module, decoder: nn.Module, fingerprint: bytes) -> None:
        super().__init__()
        self.spec = spec
        self.encoder = encoder
        self.decoder = decoder
        self.fingerprint = fingerprint

    def _to_network_range(self, images: torch.Tensor) -> torch.Tensor:
        lo, hi = self.spec.image_range
        return images * (hi - lo) + lo

    def _from_network_range(self, images: torch.Tensor) -> torch.Tensor:
        lo, hi = self.spec.image_range
        return (images - lo) / (hi - lo)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images ``[B, 3, H, W]`` in [0, 1] (H, W multiples of ``downsample``) -> latents ``[B, C, h, w]``."""
        raw = self.encoder(self._to_network_range(images))
        return (raw - self.spec.shift_factor) * self.spec.scaling_factor

    def decode(self, latents: torch.Tensor, sigma: torch.Tensor | None = None) -> torch.Tensor:
        """Latents -> images in [0, 1] (not clamped). A conditioned decoder is told each image's noise level
        ``sigma`` ``[B]`` (zero, float latents, when not given); other decoders ignore it."""
        raw = latents / self.spec.scaling_factor + self.spec.shift_factor
        if not self.spec.conditioned:
            return self._from_network_range(self.decoder(raw))
        if sigma is None:
            sigma = torch.zeros(latents.shape[0], device=latents.device)
        return self._from_network_range(self.decoder(raw, sigma))


def state_fingerprint(*state_dicts: Mapping[str, torch.Tensor]) -> bytes:
    """A short hash of weights (names, dtypes, shapes and values) that identifies a model in a bitstream."""
    digest = hashlib.sha256()
    for state in state_dicts:
        for name in sorted(state):
            tensor = state[name].detach().cpu().contiguous()
            digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.digest()[:FINGERPRINT_BYTES]
