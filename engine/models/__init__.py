"""Model registry and loading."""

from latentcodec.engine.models.autoencoder import LatentAutoencoder, ModelSpec
from latentcodec.engine.models.registry import (
    DEFAULT_MODEL,
    available_models,
    get_spec,
    load_model,
    register,
)

__all__ = [
    "DEFAULT_MODEL",
    "LatentAutoencoder",
    "ModelSpec",
    "available_models",
    "get_spec",
    "load_model",
    "register",
]
