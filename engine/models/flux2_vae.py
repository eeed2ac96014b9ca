"""The FLUX.2 VAE (diffusers ``AutoencoderKLFlux2``) as a model of the ``flux2`` latent space (``flux2-vae``).

TAEF2 encodes to and decodes from the VAE's raw latents: the mode of ``vae.encode(images in [-1, 1])``, 32 channels
at /8, before the FLUX.2 pipelines patchify them (2x2 -> 128 channels at /16) and normalize them by the VAE's
batch-norm statistics (diffusers ``Flux2Pipeline._encode_vae_image``). ``AutoencoderKLFlux2`` has no scaling or
shift factor, so both models code the same latents as they are; :mod:`.flux2_latents` converts to the pipelines'.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from latentcodec.engine.errors import ModelError
from latentcodec.engine.models.autoencoder import LatentAutoencoder, ModelSpec, state_fingerprint
from latentcodec.engine.models.flux2_latents import PipelineStats

# the FLUX.2 release's diffusers layout: the VAE in its pipeline repository's vae/ folder
FLUX2_VAE_SOURCE = "black-forest-labs/FLUX.2-dev"
PIPELINE_SUBFOLDER = "vae"


class _Encoder(nn.Module):
    def __init__(self, vae: nn.Module) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.vae.encode(images).latent_dist.mode()  # the pipelines' sample_mode="argmax"


class _Decoder(_Encoder):
    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latents).sample


def subfolders(source: str) -> list[str | None]:
    """Where in ``source`` the VAE may be, in the order tried: a folder holding its ``config.json`` is the VAE; any
    other folder, a pipeline's (``vae/``); a hub id, a pipeline repository's ``vae/``, else a repository of the VAE
    (a path that is no folder and no hub id, ``owner/name``: itself, for diffusers to say what is missing)."""
    folder = Path(source)
    if folder.is_dir():
        return [None] if (folder / "config.json").is_file() else [PIPELINE_SUBFOLDER]
    if source.count("/") != 1 or source.startswith(("/", ".", "~")):
        return [None]
    return [PIPELINE_SUBFOLDER, None]


def load_flux2_vae(spec: ModelSpec, source: str | Path, download: bool = False) -> LatentAutoencoder:
    """``AutoencoderKLFlux2.from_pretrained`` of ``source`` (a folder or hub id, ``local_files_only`` unless
    ``download``) as a LatentAutoencoder of ``spec``'s latent space; ModelError when it cannot be loaded or is not
    a FLUX.2 VAE."""
    from diffusers import AutoencoderKLFlux2

    errors = []
    for subfolder in subfolders(str(source)):
        try:
            vae = AutoencoderKLFlux2.from_pretrained(str(source), subfolder=subfolder, local_files_only=not download)
            break
        except (OSError, ValueError) as exc:
            errors.append(f"{f'{subfolder}/ of ' if subfolder else ''}{source!s}: {exc}")
    else:
        raise ModelError(f"cannot load {spec.model_id!r} from {'; nor from '.join(errors)}")
    check_config(spec, vae.config, str(source))
    return LatentAutoencoder(spec, _Encoder(vae), _Decoder(vae), state_fingerprint(vae.state_dict()))


def check_config(spec: ModelSpec, config: Any, source: str) -> None:
    """ModelError unless ``config`` is a FLUX.2 VAE's: ``spec``'s channels and downsampling, 2x2 patches."""
    found = (
        int(config.latent_channels),
        2 ** (len(config.block_out_channels) - 1),
        tuple(config.patch_size),
    )
    if found != (spec.latent_channels, spec.downsample, (2, 2)):
        raise ModelError(
            f"{source} is not a FLUX.2 VAE: {found[0]} latent channels, /{found[1]}, patches {found[2]} "
            f"(the {spec.latent_space!r} space has {spec.latent_channels}, /{spec.downsample}, (2, 2))"
        )


def pipeline_stats(model: LatentAutoencoder) -> PipelineStats:
    """The batch-norm statistics of a loaded ``flux2-vae``, for :func:`.flux2_latents.to_pipeline` and back."""
    vae = getattr(model.decoder, "vae", None)
    if vae is None or not hasattr(vae, "bn"):
        raise ModelError(f"model {model.spec.model_id!r} is not a FLUX.2 VAE: it has no batch-norm statistics")
    return PipelineStats.of(vae)
