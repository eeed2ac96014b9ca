"""The model registry: ids -> specs and loaders, and a cache of loaded models per device and dtype."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from latentcodec.engine.errors import UnknownModelError
from latentcodec.engine.models.autoencoder import LatentAutoencoder, ModelSpec
from latentcodec.engine.models.cache import LoadedCache
from latentcodec.engine.models.loaders import load_diffusers, load_tiny
from latentcodec.engine.models.weights import WeightsFile

DEFAULT_MODEL = "taef2"
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


@dataclass(frozen=True)
class RegisteredModel:
    spec: ModelSpec
    load: Callable[[ModelSpec, str | None], LatentAutoencoder]  # (spec, source override) -> model
    source_env: str | None = None  # environment variable that overrides the weights source


def _diffusers_loader(kind: str, default_source: str, subfolder: str | None = None):
    def load(spec: ModelSpec, source: str | None) -> LatentAutoencoder:
        return load_diffusers(spec, source or default_source, kind, subfolder if source is None else None)

    return load


_REGISTRY: dict[str, RegisteredModel] = {
    "taef2": RegisteredModel(
        ModelSpec("taef2", 32, 8, (0.0, 1.0), description="Tiny autoencoder for the FLUX.2 latent space"),
        lambda spec, _source: load_tiny(spec, TAEF2_FILES, midblock=True),
    ),
    "sd-vae": RegisteredModel(
        ModelSpec("sd-vae", 4, 8, (-1.0, 1.0), scaling_factor=0.18215, description="Stable Diffusion 1.x/2.x VAE"),
        _diffusers_loader("kl", "stabilityai/sd-vae-ft-mse"),
        source_env="LATENTCODEC_SD_VAE",
    ),
    "taesd": RegisteredModel(
        ModelSpec("taesd", 4, 8, (-1.0, 1.0), description="Tiny autoencoder for the Stable Diffusion latent space"),
        _diffusers_loader("tiny", "madebyollin/taesd"),
        source_env="LATENTCODEC_TAESD",
    ),
}

_cache: LoadedCache[LatentAutoencoder] = LoadedCache()


def available_models() -> list[str]:
    return sorted(_REGISTRY)


def get_spec(model_id: str) -> ModelSpec:
    return _entry(model_id).spec


def _entry(model_id: str) -> RegisteredModel:
    try:
        return _REGISTRY[model_id]
    except KeyError:
        raise UnknownModelError(f"unknown model {model_id!r}; known: {', '.join(available_models())}") from None


def load_model(
    model_id: str = DEFAULT_MODEL,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    source: str | None = None,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> LatentAutoencoder:
    """The model ``model_id`` on ``device`` in ``dtype`` and ``memory_format``, in eval mode; loaded once, cached.

    ``source`` (a hub id or local folder) overrides where diffusers models come from; so does the
    model's environment variable (``LATENTCODEC_SD_VAE``, ``LATENTCODEC_TAESD``).
    """
    entry = _entry(model_id)

    def load(source: str | None) -> LatentAutoencoder:
        model = entry.load(entry.spec, source).to(device=device, dtype=dtype, memory_format=memory_format)
        return model.eval().requires_grad_(False)

    return _cache.get(
        model_id, load, source=source, source_env=entry.source_env, device=device, dtype=dtype,
        memory_format=memory_format,
    )  # fmt: skip


def register(model_id: str, spec: ModelSpec, load: Callable[[ModelSpec, str | None], LatentAutoencoder]) -> None:
    """Add a model to the registry (used by applications and tests with their own autoencoders)."""
    _REGISTRY[model_id] = RegisteredModel(spec, load)
    _cache.forget(model_id)
