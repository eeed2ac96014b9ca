"""The interface every autoencoder in the registry exposes to the engine."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from latentcodec.engine.format import FINGERPRINT_BYTES
from latentcodec.engine.models.bicubic import Grid, Span, bicubic_block, reads
from latentcodec.engine.models.lowres import run_layer
from latentcodec.engine.models.upscaler import Level, Upscaler, bicubic


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
    latent_space: str = ""  # shared by models with one encoder: picks the entropy stage's context model


class LatentAutoencoder(nn.Module):
    """Wraps an encoder/decoder pair: images in [0, 1] <-> scaled latents, plus a weights fingerprint.

    For tiling, each network splits into a *local* part (convolutions only: exact on overlapping tiles) and a
    *global* part at latent resolution (where TAEF2's GroupNorm sees the whole image), run whole. Networks that
    do not say where to split (``encoder_global_from``, ``decoder_local_from``: indices into ``nn.Sequential``
    networks) are local throughout, as diffusers' own tiled VAE treats them.
    """

    def __init__(
        self,
        spec: ModelSpec,
        encoder: nn.Module,
        decoder: nn.Module,
        fingerprint: bytes,
        *,
        encoder_global_from: int | None = None,
        decoder_local_from: int | None = None,
    ) -> None:
        super().__init__()
        self.spec = spec
        self.encoder = encoder
        self.decoder = decoder
        self.fingerprint = fingerprint
        self.encoder_global_from, self.decoder_local_from = encoder_global_from, decoder_local_from
        self.upscaler: Upscaler | None = None  # resizes downscaled streams' images (bicubic without one)

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
        return self._from_network_range(self._decoder(raw, sigma, 0, None))

    def upscale(self, rgb: torch.Tensor, size: tuple[int, int], level: Level = None) -> torch.Tensor:
        """Decoded images ``[B, 3, h, w]`` of downscaled streams with noise levels ``level`` resized to ``size`` (not
        clamped): the model's learned :class:`~latentcodec.engine.models.upscaler.Upscaler` (or synthesis stage)
        when it has one, else bicubic."""
        if self.upscaler is None:
            return bicubic(rgb, size)
        return self.upscaler(rgb, size, level)

    @property
    def rate_scales(self) -> tuple[float, ...]:
        """The scales rate control tries for this model (those its resizer learned)."""
        return (self.upscaler or Upscaler).scales

    @property
    def upscale_align(self) -> int:
        """Blocks of :meth:`upscale_block` start at multiples of this."""
        return 2 if self.upscaler is None else self.upscaler.align

    def upscale_reads(self, n_in: int, n_out: int, span: Span) -> torch.Tensor:
        """The decoded image's samples that outputs ``span`` of :meth:`upscale` read, along a side of ``n_in`` resized
        to ``n_out`` (rows or columns alike)."""
        return reads(n_in, n_out, span) if self.upscaler is None else self.upscaler.reads(n_in, n_out, span)

    def upscale_block(
        self, source: Grid, size: tuple[int, int], rows: Span, cols: Span, level: Level = None
    ) -> torch.Tensor:
        """Block ``rows x cols`` (starts on the :attr:`upscale_align` grid) of :meth:`upscale`'s output from the
        decoded samples in ``source`` (those :meth:`upscale_reads` names): what the whole resize makes there, to
        about 1e-6."""
        if self.upscaler is None:
            return bicubic_block(source, size, rows, cols)
        return self.upscaler.block(source, size, rows, cols, level)

    def branches(self, sigma: torch.Tensor | None) -> list[tuple[int, torch.Tensor | None]]:
        """Which decoder (branch) decodes which rows (``None``: every row) of images with noise levels ``sigma``:
        one decoder, branch 0 (:class:`~latentcodec.engine.models.switched.SwitchedAutoencoder` has two)."""
        return [(0, None)]

    def branch(self, index: int) -> LatentAutoencoder:
        """The plain model that runs branch ``index``."""
        return self

    def encode_local(self, images: torch.Tensor) -> torch.Tensor:
        """The encoder's local part: images in [0, 1] -> features at latent resolution (tileable)."""
        x = self._to_network_range(images)
        return x if self.encoder_global_from is None else self.encoder[: self.encoder_global_from](x)

    def encode_global(self, features: torch.Tensor) -> torch.Tensor:
        """The encoder's global part, on the whole feature map (in stripes; may overwrite it) -> latents."""
        if self.encoder_global_from is None:
            raw = self.encoder(features)
        else:
            raw = features
            for layer in self.encoder[self.encoder_global_from :]:
                raw = run_layer(layer, raw)
        return (raw - self.spec.shift_factor) * self.spec.scaling_factor

    def decode_global(self, latents: torch.Tensor, sigma: torch.Tensor | None = None) -> torch.Tensor:
        """The decoder's global part, on the whole latent grid (in stripes): latents -> features."""
        raw = latents / self.spec.scaling_factor + self.spec.shift_factor
        if self.decoder_local_from is None:
            return raw
        return self._decoder(raw, sigma, 0, self.decoder_local_from, run_layer)

    def decode_local(self, features: torch.Tensor, sigma: torch.Tensor | None = None) -> torch.Tensor:
        """The decoder's local part (tileable): features -> images in [0, 1] (not clamped). A split network runs
        its blocks in row stripes (:func:`~latentcodec.engine.models.lowres.run_layer`): the same numbers, in a
        fraction of a full-resolution tile's workspace."""
        if self.decoder_local_from is None:
            return self._from_network_range(self._decoder(features, sigma, 0, None))
        return self._from_network_range(self._decoder(features, sigma, self.decoder_local_from, None, run_layer))

    def _decoder(self, x: torch.Tensor, sigma: torch.Tensor | None, start: int, stop: int | None, run=None):
        """Decoder layers ``start:stop`` (each through ``run(layer, x)`` when given)."""
        if self.spec.conditioned:
            sigma = torch.zeros(x.shape[0], device=x.device) if sigma is None else sigma
            return self.decoder(x, sigma, start, stop, run)
        if (start, stop, run) == (0, None, None):
            return self.decoder(x)
        for layer in self.decoder[start:stop]:
            x = layer(x) if run is None else run(layer, x)
        return x


def state_fingerprint(*state_dicts: Mapping[str, torch.Tensor]) -> bytes:
    """A short hash of weights (names, dtypes, shapes and values) that identifies a model in a bitstream."""
    digest = hashlib.sha256()
    for state in state_dicts:
        for name in sorted(state):
            tensor = state[name].detach().cpu().contiguous()
            digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.digest()[:FINGERPRINT_BYTES]
