"""Loaders that build a LatentAutoencoder for each registered model family."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import torch
from torch import nn

from latentcodec.engine.errors import ModelError, WeightsMismatchError, WeightsNotFoundError
from latentcodec.engine.models import weights as weights_lib
from latentcodec.engine.models.assembly import with_state
from latentcodec.engine.models.autoencoder import LatentAutoencoder, ModelSpec, state_fingerprint
from latentcodec.engine.models.switched import SwitchedAutoencoder
from latentcodec.engine.models.synthesis import Synthesizer
from latentcodec.engine.models.tiny_autoencoder import (
    DECODER_LOCAL_FROM,
    ENCODER_GLOBAL_FROM,
    tiny_decoder,
    tiny_encoder,
)
from latentcodec.engine.models.upscaler import Upscaler

TINY_SPLIT = {"encoder_global_from": ENCODER_GLOBAL_FROM, "decoder_local_from": DECODER_LOCAL_FROM}


def load_tiny(spec: ModelSpec, files: dict[str, weights_lib.WeightsFile], midblock: bool) -> LatentAutoencoder:
    """A TAESD-family model from its ``encoder``/``decoder`` state-dict files."""
    states = _states(files)
    encoder = with_state(lambda: tiny_encoder(spec.latent_channels, midblock), states["encoder"])
    decoder = with_state(lambda: tiny_decoder(spec.latent_channels, midblock), states["decoder"])
    fingerprint = state_fingerprint(states["encoder"], states["decoder"])
    return LatentAutoencoder(spec, encoder, decoder, fingerprint, **TINY_SPLIT)


def load_tiny_conditioned(spec: ModelSpec, encoder_file: weights_lib.WeightsFile, decoder: Path, sha256: str):
    """A TAESD-family encoder from its state-dict file, and a :class:`ConditionedTinyDecoder` from safetensors
    that ship with the package (``decoder``, checked against ``sha256``)."""
    encoder_state = torch.load(weights_lib.resolve(encoder_file), map_location="cpu", weights_only=True)
    decoder_state = _bundled_state(spec, decoder, sha256)
    encoder, conditioned = _tiny_encoder(spec, encoder_state), _conditioned_decoder(spec, decoder_state)
    fingerprint = state_fingerprint(encoder_state, decoder_state)
    return LatentAutoencoder(spec, encoder, conditioned, fingerprint, **TINY_SPLIT)


def load_tiny_switched(
    spec: ModelSpec,
    files: dict[str, weights_lib.WeightsFile],
    decoder: tuple[Path, str],
    upscaler: tuple[Path, str],
    threshold: float,
) -> SwitchedAutoencoder:
    """A TAESD-family model whose own decoder serves clean latents and a bundled conditioned decoder serves
    noise levels from ``threshold`` on, with a bundled learned upscaler or synthesis stage (bundled files: (path,
    sha256); its metadata says which)."""
    states = _states(files)
    tuned_state, upscaler_state = _bundled_state(spec, *decoder), _bundled_state(spec, *upscaler)
    clean = with_state(lambda: tiny_decoder(spec.latent_channels, midblock=True), states["decoder"])
    level = {"threshold": torch.tensor(threshold, dtype=torch.float64)}
    fingerprint = state_fingerprint(states["encoder"], states["decoder"], tuned_state, level, upscaler_state)
    encoder, tuned = _tiny_encoder(spec, states["encoder"]), _conditioned_decoder(spec, tuned_state)
    model = SwitchedAutoencoder(spec, encoder, tuned, clean, fingerprint, threshold, **TINY_SPLIT)
    model.upscaler = with_state(lambda: _resizer(_metadata(upscaler[0])), upscaler_state)
    return model


def _resizer(layout: dict[str, str]) -> Upscaler:
    """The untrained resizer a bundled file's metadata describes (training/upscaler.py writes it)."""
    if layout.get("kind") == "synthesis":
        widths = tuple(int(w) for w in re.findall(r"\d+", layout["widths"]))
        return Synthesizer(widths)  # type: ignore[arg-type]
    scales = tuple(float(s) for s in re.findall(r"[\d.]+", layout["scales"])) if "scales" in layout else None
    return Upscaler(int(layout["width"]), int(layout["depth"]), scales, layout.get("told_level") == "True")


def _metadata(path: Path) -> dict[str, str]:
    """A safetensors file's ``latentcodec`` metadata (JSON)."""
    import json

    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:
        return json.loads((handle.metadata() or {}).get("latentcodec", "{}"))


def _states(files: dict[str, weights_lib.WeightsFile]) -> dict[str, dict[str, torch.Tensor]]:
    return {
        part: torch.load(weights_lib.resolve(file), map_location="cpu", weights_only=True)
        for part, file in files.items()
    }


def _bundled_state(spec: ModelSpec, path: Path, sha256: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    if not path.is_file():
        raise WeightsNotFoundError(f"the {spec.model_id!r} weights {path} are missing from the package")
    if (actual := weights_lib.file_sha256(path)) != sha256:
        raise WeightsMismatchError(f"{path} has sha256 {actual}, expected {sha256}")
    return load_file(str(path))


def _tiny_encoder(spec: ModelSpec, state: dict[str, torch.Tensor]) -> nn.Module:
    return with_state(lambda: tiny_encoder(spec.latent_channels, midblock=True), state)


def _conditioned_decoder(spec: ModelSpec, state: dict[str, torch.Tensor]) -> nn.Module:
    from latentcodec.engine.models.conditioned_decoder import ConditionedTinyDecoder

    return with_state(lambda: ConditionedTinyDecoder(spec.latent_channels), state)


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


def load_diffusers(
    spec: ModelSpec, source: str | Path, kind: str, download: bool = False, source_env: str | None = None
) -> LatentAutoencoder:
    """A diffusers ``AutoencoderKL`` (``kind="kl"``), ``AutoencoderTiny`` (``kind="tiny"``) or
    ``AutoencoderKLFlux2`` (``kind="flux2"``: :mod:`.flux2_vae`, a pipeline's ``vae/`` folder too).

    ``source`` is a hub id or a local folder, passed to ``from_pretrained`` as a user with the weights would;
    without ``download`` only files already on this machine are read (no network). ``source_env``: the
    environment variable that names another source (said in the error when the source is not here).
    """
    if not download:
        ways = ["Codec(source=...)", "latentcodec --source", *([f"${source_env}"] if source_env else [])]
        weights_lib.require_local(str(source), f"model {spec.model_id!r}", f"name its source ({', '.join(ways)})")
    if kind == "flux2":
        from latentcodec.engine.models.flux2_vae import load_flux2_vae

        return load_flux2_vae(spec, source, download=download)
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
