"""The denoiser registry: ids -> loaders, the latent spaces they work in and the strength streams record."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path

import torch

from latentcodec.engine.denoise import latent_denoiser
from latentcodec.engine.denoise.base import Denoiser
from latentcodec.engine.denoise.sd_unet import load_sd_unet
from latentcodec.engine.models import weights
from latentcodec.engine.models.autoencoder import state_fingerprint
from latentcodec.engine.models.weights import WeightsFile, downloads_allowed
from latentcodec.engine.registry import Placement, Registry

# made by training/denoiser.py (`latentcodec-lab train-denoiser ../shared/data/train OUT`, seeded; its log is
# training/runs/latent_denoiser_taef2.log) and shipped in the package; a copy in $LATENTCODEC_WEIGHTS or the
# cache is looked at first, and must hash the same
LATENT_DENOISER_TAEF2 = WeightsFile(
    "latent-denoiser",
    "taef2.safetensors",
    "bac2743cddb8f20b7baa80510c245e63966ca75967aa6cc270181d4a0e66c9e8",
    "",
    bundled="latent_denoiser_taef2.safetensors",
)
SD_SOURCE = "stable-diffusion-v1-5/stable-diffusion-v1-5"


@dataclass(frozen=True)
class DenoiserSpec:
    denoiser_id: str
    model_ids: tuple[str, ...]  # the autoencoders whose latent space it was made for
    load: Callable[[str | None], Denoiser]  # source override -> module
    source_env: str | None = None
    description: str = ""
    strength: float = 1.0  # fraction of the measured noise level that streams naming it record by default


class LoadedDenoiser:
    """A denoiser module on its placement, with its fingerprint."""

    def __init__(self, denoiser_id: str, module: Denoiser, fingerprint: bytes) -> None:
        self.denoiser_id, self.module, self.fingerprint = denoiser_id, module, fingerprint

    def schedule_key(self, noise_level: float, mode: int) -> Hashable:
        return self.module.schedule_key(noise_level, mode)

    def pass_fn(self, key: Hashable) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """``(latents, noise levels [B]) -> latents`` for streams of ``key``."""
        return lambda latents, sigma: self.module(latents, sigma, key)


def _load_latent_denoiser(source: str | None) -> Denoiser:
    """The registry's weights (sha256-checked), or a file the caller trained and names (its fingerprint,
    recorded in every stream, keeps decoders with other weights from using it)."""
    if source is not None:
        return latent_denoiser.load(Path(source))[0]
    return latent_denoiser.load(weights.resolve(LATENT_DENOISER_TAEF2), LATENT_DENOISER_TAEF2.sha256)[0]


# the models of TAEF2's latent space: the latent denoiser runs before their decoder (the switched models then
# decode with TAEF2's)
TAEF2_MODELS = ("taef2", "taef2-q2", "taef2-q3", "taef2-q4")
DENOISERS: Registry[DenoiserSpec, LoadedDenoiser] = Registry(
    "denoiser",
    {
        "latent-denoiser": DenoiserSpec(
            "latent-denoiser",
            TAEF2_MODELS,
            _load_latent_denoiser,
            source_env="LATENTCODEC_LATENT_DENOISER",
            description="The project's 0.9M-parameter U-Net (plain torch), trained on TAEF2 latents"
            " (training/denoiser.py)",
            strength=0.5,  # chosen on held-out training images (README, "Latent denoiser")
        ),
        "sd-unet": DenoiserSpec(
            "sd-unet",
            ("sd-vae", "taesd"),
            lambda source: load_sd_unet(source or SD_SOURCE, download=source is not None or downloads_allowed()),
            source_env="LATENTCODEC_SD_UNET",
            description="Stable Diffusion's UNet2DConditionModel, empty prompt, a few DDIM steps",
        ),
    },
)
# model id -> the denoiser its streams name by default (none for taef2-q4: the latent denoiser learned one step's
# noise, and on its streams, steps per channel, it lost on held-out photos: README, "Rate control")
DEFAULT_DENOISERS = {model: "latent-denoiser" for model in ("taef2", "taef2-q2", "taef2-q3")}


def available_denoisers() -> list[str]:
    return DENOISERS.names()


def denoiser_spec(denoiser_id: str) -> DenoiserSpec:
    return DENOISERS[denoiser_id]


def load_denoiser(
    denoiser_id: str,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    source: str | None = None,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> LoadedDenoiser:
    """The denoiser on ``device`` in ``dtype``, in eval mode; loaded once, cached. ``source`` (or the
    denoiser's environment variable: ``LATENTCODEC_SD_UNET``, ``LATENTCODEC_LATENT_DENOISER``) overrides where
    its weights come from (a diffusers id or folder; a weights file the training script wrote)."""

    def build(spec: DenoiserSpec, source: str | None) -> LoadedDenoiser:
        module = spec.load(source)
        fingerprint = state_fingerprint(module.state_dict())
        module = module.to(device=device, dtype=dtype, memory_format=memory_format).eval().requires_grad_(False)
        return LoadedDenoiser(denoiser_id, module, fingerprint)

    return DENOISERS.load(denoiser_id, build, Placement(device, dtype, memory_format), source)


def register_denoiser(spec: DenoiserSpec) -> None:
    """Add a denoiser (applications and tests with their own networks)."""
    DENOISERS.register(spec.denoiser_id, spec)
