"""The latent symbols' entropy stage: which method codes a stream's symbols, and running it either way.

``context`` codes uniform int8 symbols of a latent space that has a context model (shipped, sha256-pinned);
everything else (palette, scalar8, int16 symbols, other latent spaces) is one zstd frame.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from latentcodec.engine.entropy import context_coder, zstd
from latentcodec.engine.entropy.context_model import ContextModel, load
from latentcodec.engine.errors import CorruptStreamError, WeightsMismatchError
from latentcodec.engine.format import CodingMode, EntropyMethod
from latentcodec.engine.models.weights import BUNDLED, file_sha256

# latent space -> (bundled file, sha256); made by training/entropy_model.py (`latentcodec-lab train-entropy`)
CONTEXT_MODELS = {
    "flux2": (
        "context_model_flux2.safetensors",
        "d43d155974866c118eb5842c388a3d083c3a5f265d0d422a1e84cf481e0a7d59",
    ),
}

Shape = tuple[int, int, int]


@cache
def context_model(latent_space: str) -> ContextModel | None:
    """The latent space's context model (None when it has none); raises WeightsMismatchError if tampered with."""
    if latent_space not in CONTEXT_MODELS:
        return None
    filename, sha256 = CONTEXT_MODELS[latent_space]
    path = BUNDLED / filename
    if file_sha256(path) != sha256:
        raise WeightsMismatchError(f"{path} does not match its pinned sha256 {sha256[:12]}...")
    return load(path)


def _int8_planes(mode: CodingMode, size: int, shape: Shape) -> bool:
    return mode == CodingMode.UNIFORM and size == shape[0] * shape[1] * shape[2]


def method_for(wanted: EntropyMethod, mode: CodingMode, size: int, shape: Shape, latent_space: str) -> EntropyMethod:
    """``wanted`` where the symbols allow it, zstd otherwise."""
    model = context_model(latent_space) if wanted == EntropyMethod.CONTEXT else None
    usable = model is not None and model.channels == shape[0] and _int8_planes(mode, size, shape)
    return EntropyMethod.CONTEXT if usable else EntropyMethod.ZSTD


def compress(planes: bytes, method: EntropyMethod, shape: Shape, latent_space: str, level: int) -> bytes:
    """The payload of byte planes under ``method`` (one :func:`method_for` chose)."""
    if method == EntropyMethod.ZSTD:
        return zstd.compress(planes, level)
    symbols = np.frombuffer(planes, dtype=np.int8).reshape(shape)
    return context_coder.encode(symbols, context_model(latent_space))


def decompress(
    payload: bytes, method: EntropyMethod, mode: CodingMode, size: int, shape: Shape, latent_space: str
) -> bytes:
    """The ``size`` bytes of planes a payload holds; raises CorruptStreamError for anything malformed."""
    if method == EntropyMethod.ZSTD:
        return zstd.decompress(payload, size)
    model = context_model(latent_space)
    if model is None or not _int8_planes(mode, size, shape):
        raise CorruptStreamError("context-coded latents need int8 uniform symbols in a latent space with a model")
    return context_coder.decode(payload, shape, model).tobytes()
