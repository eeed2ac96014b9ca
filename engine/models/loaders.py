"""Loaders that build a LatentAutoencoder for each registered model family."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import nn

from latentcodec.engine.errors import ModelError, WeightsMismatchError, WeightsNotFoundError
from latentcodec.engine.models import weights as weights_lib
from latentcodec.engine.models.autoencoder import LatentAutoencoder, ModelSpec, state_fingerprint
from latentcodec.engine.models.tiny_autoencoder import (
    DECODER_LOCAL_FROM,
    ENCODER_GLOBAL_FROM,
    tiny_decoder,
    tiny_encoder,
)

TINY_SPLIT = {"encoder_global_from": ENCODER_GLOBAL_FROM, "decoder_local_from": DECODER_LOCAL_FROM}


def load_tiny(spec: ModelSpec, files: dict[str, weights_lib.WeightsFile], midblock: bool) -> LatentAutoencoder:
    """A TAESD-family model from its ``encoder``/``decoder`` state-dict files."""
    states = {
        part: torch.load(weights_lib.resolve(files[part]), map_location="cpu", weights_only=True)
        for part in ("encoder", "decoder")
    }
    encoder = tiny_encoder(spec.latent_channels, midblock)
    decoder = tiny_decoder(spec.latent_channels, midblock)
    encoder.load_state_dict({k: v.float() for k, v in states["encoder"].items()})
    decoder.load_state_dict({k: v.float() for k, v in states["decoder"].items()})
    fingerprint = state_fingerprint(states["encoder"], states["decoder"])
    return LatentAutoencoder(spec, encoder, decoder, fingerprint, **TINY_SPLIT)


def load_tiny_conditioned(spec: ModelSpec, encoder_file: weights_lib.WeightsFile, decoder: Path, sha256: str):
    """A TAESD-family encoder from its state-dict file, and a :class:`ConditionedTinyDecoder` from safetensors
    that ship with the package (``decoder``, checked against ``sha256``)."""
    from safetensors.torch import load_file

    from latentcodec.engine.models.conditioned_decoder import ConditionedTinyDecoder

    encoder_state = torch.load(weights_lib.resolve(encoder_file), map_location="cpu", weights_only=True)
    if not decoder.is_file():
        raise WeightsNotFoundError(f"the {spec.model_id!r} decoder weights {decoder} are missing from the package")
    if (actual := weights_lib.file_sha256(decoder)) != sha256:
        raise WeightsMismatchError(f"{decoder} has sha256 {actual}, expected {sha256}")
    decoder_state = load_file(str(decoder))
    encoder = tiny_encoder(spec.latent_channels, midblock=True)
    encoder.load_state_dict({k: v.float() for k, v in encoder_state.items()})
    conditioned = ConditionedTinyDecoder(spec.latent_channels)
    conditioned.load_state_dict({k: v.float() for k, v in decoder_state.items()})
    fingerprint = state_fingerprint(encoder_state, decoder_state)
    return LatentAutoencoder(spec, encoder, conditioned, fingerprint, **TINY_SPLIT)


class _KLEncoder(nn.Module):
    def __init__(self, vae: nn.Module) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.vae.encode(images).latent_dist.mode()


class _TinyEncoder(_KLEncoder):
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.vae.encode(images).latents


class _Decoder(_KLEncoder):
    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latents).sample


def load_diffusers(spec: ModelSpec, source: str | Path, kind: str, download: bool = False) -> LatentAutoencoder:
    """A diffusers ``AutoencoderKL`` (``kind="kl"``) or ``AutoencoderTiny`` (``kind="tiny"``).

    ``source`` is a hub id or a local folder, passed to ``from_pretrained`` as a user with the weights would;
    without ``download`` only files already on this machine are read (no network).
    """
    if not download:
        weights_lib.require_local(str(source), f"model {spec.model_id!r}")
    from diffusers import AutoencoderKL, AutoencoderTiny

    cls = AutoencoderKL if kind == "kl" else AutoencoderTiny
    try:
        vae = cls.from_pretrained(str(source), local_files_only=not download)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load {spec.model_id!r} from {source!s}: {exc}") from exc
    return wrap_diffusers(spec, vae)


def wrap_diffusers(spec: ModelSpec, vae: nn.Module) -> LatentAutoencoder:
    """A LatentAutoencoder over a diffusers ``AutoencoderKL`` or ``AutoencoderTiny``, its spec read from the config."""
    from diffusers import AutoencoderKL

    kl = isinstance(vae, AutoencoderKL)
    config = vae.config
    spec = dataclasses.replace(
        spec,
        latent_channels=int(config.latent_channels),
        scaling_factor=float(config.scaling_factor or 1.0),
        shift_factor=float(getattr(config, "shift_factor", None) or 0.0),
        downsample=2 ** (len(config.block_out_channels if kl else config.encoder_block_out_channels) - 1),
    )
    encoder = (_KLEncoder if kl else _TinyEncoder)(vae)
    return LatentAutoencoder(spec, encoder, _Decoder(vae), state_fingerprint(vae.state_dict()))
