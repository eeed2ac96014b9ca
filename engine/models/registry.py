"""The autoencoder registry: ids -> latent-space specs and loaders; loaded models are kept per placement."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from latentcodec.engine.format import DEFAULT_MODEL
from latentcodec.engine.models.autoencoder import LatentAutoencoder, ModelSpec
from latentcodec.engine.models.flux2_vae import FLUX2_VAE_SOURCE
from latentcodec.engine.models.loaders import load_diffusers, load_tiny, load_tiny_conditioned, load_tiny_switched
from latentcodec.engine.models.weights import WeightsFile, downloads_allowed
from latentcodec.engine.registry import Placement, Registry

_TAESD_REPO = "https://github.com/madebyollin/taesd/raw/main"

TAEF2_FILES = {
    "encoder": WeightsFile(
        "taef2",
        "encoder.pth",
        "10a4e1021e89d7551eaf161352da8dbd0b1aa83872ae28b150c1df1ce2f147b6",
        f"{_TAESD_REPO}/taef2_encoder.pth",
    ),
    "decoder": WeightsFile(
        "taef2",
        "decoder.pth",
        "0a44a31e1ae59eb9dbf9359d24942fd3ef5928162c1800d97a28c61d51be0ab5",
        f"{_TAESD_REPO}/taef2_decoder.pth",
    ),
}

# made by training/decoder.py (`latentcodec-lab train-decoder`); small, ours, so it ships inside the package
TAEF2Q_DECODER = Path(__file__).with_name("bundled") / "taef2q_decoder.safetensors"
TAEF2Q_DECODER_SHA256 = "f329daebe648d854d496f34ad328618fba37b03855514e6037d76759a0c86d63"
# taef2-q2 switches from TAEF2's decoder to taef2-q's at this noise level (RMS quantization error per latent),
# where the tuned decoder starts to win on held-out photos (README, "Trained synthesis")
TAEF2Q2_THRESHOLD = 0.35
# made by training/upscaler.py (`latentcodec-lab train-upscaler`): resizes taef2-q2's downscaled streams
TAEF2Q2_UPSCALER = Path(__file__).with_name("bundled") / "upscaler_taef2.safetensors"
TAEF2Q2_UPSCALER_SHA256 = "b25a656ed0aa4eded79903e81747b1b28ad26d216d9f085e0c7d168a14c49f12"
# taef2-q3: taef2-q2's decoders and upscaler, switched at the level where the tuned decoder starts to win on
# streams with steps per channel (held-out photos; README, "Steps per channel")
TAEF2Q3_THRESHOLD = 0.7
# made by training/upscaler.py (`latentcodec-lab train-upscaler`, its defaults): resizes taef2-q3's streams (steps per
# channel) from any scale of rate control's finer ladder, told the noise level; taef2-q4 = taef2-q3 + this upscaler
TAEF2Q4_UPSCALER = Path(__file__).with_name("bundled") / "upscaler_taef2q4.safetensors"
TAEF2Q4_UPSCALER_SHA256 = "0aad02a1ac73261804d04a9b8b254aeb85d824fe3295231836dce1827acc10f2"

Loader = Callable[[ModelSpec, str | None], LatentAutoencoder]  # (spec, source override) -> model


@dataclass(frozen=True)
class RegisteredModel:
    spec: ModelSpec
    load: Loader
    source_env: str | None = None  # environment variable that overrides the weights source


def _diffusers_model(spec: ModelSpec, kind: str, default_source: str, source_env: str) -> RegisteredModel:
    """A diffusers model that loads ``default_source`` unless told otherwise; the hub is asked only for a source
    the caller named (argument or environment variable ``source_env``) or with ``LATENTCODEC_DOWNLOAD=1``."""

    def load(spec: ModelSpec, source: str | None) -> LatentAutoencoder:
        download = source is not None or downloads_allowed()
        return load_diffusers(spec, source or default_source, kind, download=download, source_env=source_env)

    return RegisteredModel(spec, load, source_env=source_env)


def _flux2(model_id: str, description: str, conditioned: bool = False) -> ModelSpec:
    """A model of TAEF2's latent space (32 channels, /8, images in [0, 1])."""
    flux2 = {"latent_space": "flux2", "conditioned": conditioned}
    return ModelSpec(model_id, 32, 8, (0.0, 1.0), description=description, **flux2)


MODELS: Registry[RegisteredModel, LatentAutoencoder] = Registry(
    "model",
    {
        "taef2": RegisteredModel(
            _flux2("taef2", "Tiny autoencoder for the FLUX.2 latent space"),
            lambda spec, _source: load_tiny(spec, TAEF2_FILES, midblock=True),
        ),
        "taef2-q": RegisteredModel(
            _flux2("taef2-q", "TAEF2 with its decoder fine-tuned for quantized latents, told their noise level", True),
            lambda spec, _source: load_tiny_conditioned(
                spec, TAEF2_FILES["encoder"], TAEF2Q_DECODER, TAEF2Q_DECODER_SHA256
            ),
        ),
        "taef2-q2": RegisteredModel(
            _flux2("taef2-q2", "TAEF2; taef2-q's decoder for coarsely quantized latents; a learned upscaler", True),
            lambda spec, _source: load_tiny_switched(
                spec,
                TAEF2_FILES,
                (TAEF2Q_DECODER, TAEF2Q_DECODER_SHA256),
                (TAEF2Q2_UPSCALER, TAEF2Q2_UPSCALER_SHA256),
                TAEF2Q2_THRESHOLD,
            ),
        ),
        "taef2-q3": RegisteredModel(
            _flux2("taef2-q3", "taef2-q2's decoders and upscaler, switched for steps per channel", True),
            lambda spec, _source: load_tiny_switched(
                spec,
                TAEF2_FILES,
                (TAEF2Q_DECODER, TAEF2Q_DECODER_SHA256),
                (TAEF2Q2_UPSCALER, TAEF2Q2_UPSCALER_SHA256),
                TAEF2Q3_THRESHOLD,
            ),
        ),
        "taef2-q4": RegisteredModel(
            _flux2("taef2-q4", "taef2-q3 with an upscaler for its streams from rate control's finer scales", True),
            lambda spec, _source: load_tiny_switched(
                spec,
                TAEF2_FILES,
                (TAEF2Q_DECODER, TAEF2Q_DECODER_SHA256),
                (TAEF2Q4_UPSCALER, TAEF2Q4_UPSCALER_SHA256),
                TAEF2Q3_THRESHOLD,
            ),
        ),
        "sd-vae": _diffusers_model(
            ModelSpec("sd-vae", 4, 8, (-1.0, 1.0), scaling_factor=0.18215, description="Stable Diffusion 1.x/2.x VAE"),
            "kl",
            "stabilityai/sd-vae-ft-mse",
            "LATENTCODEC_SD_VAE",
        ),
        "taesd": _diffusers_model(
            ModelSpec("taesd", 4, 8, (-1.0, 1.0), description="Tiny autoencoder for the Stable Diffusion latent space"),
            "tiny",
            "madebyollin/taesd",
            "LATENTCODEC_TAESD",
        ),
        "flux2-vae": _diffusers_model(
            ModelSpec(
                "flux2-vae",
                32,
                8,
                (-1.0, 1.0),
                description="The FLUX.2 VAE (diffusers AutoencoderKLFlux2): TAEF2's latent space at full quality",
                latent_space="flux2",  # its raw latents, as TAEF2's (engine/models/flux2_vae.py)
            ),
            "flux2",
            FLUX2_VAE_SOURCE,
            "LATENTCODEC_FLUX2_VAE",
        ),
    },
)


def available_models() -> list[str]:
    return MODELS.names()


def get_spec(model_id: str) -> ModelSpec:
    return MODELS[model_id].spec


def load_model(
    model_id: str = DEFAULT_MODEL,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    source: str | None = None,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> LatentAutoencoder:
    """The model ``model_id`` on ``device`` in ``dtype`` and ``memory_format``, in eval mode; loaded once, cached.

    ``source`` (a hub id or local folder) overrides where diffusers models come from; so does the
    model's environment variable (``LATENTCODEC_SD_VAE``, ``LATENTCODEC_TAESD``, ``LATENTCODEC_FLUX2_VAE``).
    """
    placement = Placement(device, dtype, memory_format)

    def build(entry: RegisteredModel, source: str | None) -> LatentAutoencoder:
        model = entry.load(entry.spec, source).to(device=device, dtype=dtype, memory_format=memory_format)
        return model.eval().requires_grad_(False)

    return MODELS.load(model_id, build, placement, source)


def register(model_id: str, spec: ModelSpec, load: Loader) -> None:
    """Add a model to the registry (used by applications and tests with their own autoencoders)."""
    MODELS.register(model_id, RegisteredModel(spec, load))
