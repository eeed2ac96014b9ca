"""The latent symbols' entropy stage: the registry of entropy methods, which one codes a stream's symbols, and
running it either way (or only measuring its rate).

Modelled methods (``passes``, the default, ``context`` and ``passes_v1``) code uniform int8 symbols of a latent
space that has a shipped, sha256-pinned model for that method; everything else (palette, scalar8, int16 symbols,
other latent spaces) is one zstd frame.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from latentcodec.engine.entropy import context_coder, passes_coder, passes_model, zstd
from latentcodec.engine.entropy import context_model as wavefront_model
from latentcodec.engine.entropy.context_model import SYMBOL_MAX
from latentcodec.engine.errors import CorruptStreamError, WeightsMismatchError, WeightsNotFoundError
from latentcodec.engine.format import CodingMode, EntropyMethod
from latentcodec.engine.models.weights import BUNDLED, file_sha256
from latentcodec.engine.stage_timer import staged

Shape = tuple[int, int, int]
Device = torch.device | None  # where a modelled method's contexts run (None: the host)


@dataclass(frozen=True)
class ModelledMethod:
    """An entropy method for uniform int8 symbols ``[C, h, w]`` under a model of their latent space."""

    models: dict[str, tuple[str, str]]  # latent space -> (bundled file, sha256), made by the training script
    load: Callable[[Path], Any]
    encode: Callable[[np.ndarray, Any], bytes]
    decode: Callable[[bytes, Shape, Any], np.ndarray]
    code_length: Callable[[np.ndarray, Any], float] | None = None  # bits, without coding
    # contexts on a torch device (the functions then take ``device``): a batch's at once, grids [B, C, h, w] ...
    batch_contexts: Callable[[torch.Tensor, Any], tuple[torch.Tensor, ...]] | None = None
    encode_contexts: Callable[..., bytes] | None = None  # ... and the payload of one row of them, (row, shape, model)

    def on(self, device: torch.device | None) -> dict:
        """The keyword arguments that place the method's contexts on ``device`` (none where they run on the host)."""
        return {"device": device} if self.batch_contexts is not None and device is not None else {}


def _passes(filename: str, sha256: str) -> ModelledMethod:
    """A ``passes`` method whose flux2 model is the bundled ``filename`` (made by ``training/passes_model.py``)."""
    return ModelledMethod(
        {"flux2": (filename, sha256)},
        passes_model.load,
        passes_coder.encode,
        passes_coder.decode,
        passes_coder.code_length,
        passes_coder.batch_contexts,
        passes_coder.encode_contexts,
    )


_threads = threading.local()


@contextmanager
def side_stream(device: Device) -> Iterator[None]:
    """On CUDA, the calling host thread's own stream: its contexts' kernels and copies do not queue behind the
    network passes on the default stream (which its host copies would otherwise wait for)."""
    if device is None or torch.device(device).type != "cuda":
        yield
        return
    streams = _threads.__dict__.setdefault("streams", {})
    stream = streams.get(device) or streams.setdefault(device, torch.cuda.Stream(device))
    with torch.cuda.stream(stream):
        yield


CONTEXT_SHA256 = "d43d155974866c118eb5842c388a3d083c3a5f265d0d422a1e84cf481e0a7d59"
PASSES_V1_SHA256 = "486fff01a7b540c054a3d232b376bc48fb280ebb8e4ed7c82ab0e8749673c0bb"
PASSES_SHA256 = "e64f0e202d078f232a2a6fb970ff224d6eff6e29ddbe923d19f51cd18d67d969"
METHODS: dict[EntropyMethod, ModelledMethod] = {
    EntropyMethod.CONTEXT: ModelledMethod(  # training/entropy_model.py (`latentcodec-lab train-entropy`)
        {"flux2": ("context_model_flux2.safetensors", CONTEXT_SHA256)},
        wavefront_model.load,
        context_coder.encode,
        context_coder.decode,
    ),
    # `latentcodec-lab train-passes`: passes_v1 with `--hidden 32 --side 0` (log: passes_model_flux2), passes with
    # the script's defaults
    EntropyMethod.PASSES_V1: _passes("passes_model_flux2.safetensors", PASSES_V1_SHA256),
    EntropyMethod.PASSES: _passes("passes_model_v2_flux2.safetensors", PASSES_SHA256),
}


@cache
def model_for(method: EntropyMethod, latent_space: str) -> Any:
    """The method's model of the latent space (None when it has none); raises WeightsMismatchError if tampered."""
    if method not in METHODS or latent_space not in METHODS[method].models:
        return None
    filename, sha256 = METHODS[method].models[latent_space]
    path = BUNDLED / filename
    if not path.is_file():
        raise WeightsNotFoundError(f"the {method.label} entropy model {path} is missing from the package")
    if file_sha256(path) != sha256:
        raise WeightsMismatchError(f"{path} does not match its pinned sha256 {sha256[:12]}...")
    return METHODS[method].load(path)


def context_model(latent_space: str) -> wavefront_model.ContextModel | None:
    """The ``context`` method's model of a latent space."""
    return model_for(EntropyMethod.CONTEXT, latent_space)


def _int8_planes(mode: CodingMode, size: int, shape: Shape) -> bool:
    return mode == CodingMode.UNIFORM and size == shape[0] * shape[1] * shape[2]


def method_for(wanted: EntropyMethod, mode: CodingMode, size: int, shape: Shape, latent_space: str) -> EntropyMethod:
    """``wanted`` where the symbols allow it, zstd otherwise."""
    model = model_for(wanted, latent_space)
    usable = model is not None and model.channels == shape[0] and _int8_planes(mode, size, shape)
    return wanted if usable else EntropyMethod.ZSTD


def _symbols(planes: bytes, shape: Shape) -> np.ndarray:
    return np.frombuffer(planes, dtype=np.int8).reshape(shape)


def batch_contexts(
    planes: torch.Tensor, wanted: EntropyMethod, mode: CodingMode, shape: Shape, latent_space: str
) -> tuple | None:
    """The contexts of a batch's int8 symbols of ``shape`` (the first bytes of each row of ``planes`` ``[B, bytes]``,
    uint8, on the session's device) under the method :func:`method_for` picks for them, each step one computation
    over the batch on that device, for :func:`compress` to code row by row on the host (its ``contexts``); None
    where that method has no such step. Rows whose symbols are wider get contexts of their low bytes: unused, as
    their method is zstd."""
    size = int(np.prod(shape))
    method = method_for(wanted, mode, size, shape, latent_space)
    modelled = METHODS.get(method)
    if modelled is None or modelled.batch_contexts is None or planes.shape[1] < size:
        return None
    grids = planes[:, :size].view(torch.int8).clamp(-SYMBOL_MAX, SYMBOL_MAX).reshape(len(planes), *shape)
    return modelled.batch_contexts(grids, model_for(method, latent_space))


@staged("entropy coding")
def compress(
    planes: bytes,
    method: EntropyMethod,
    shape: Shape,
    latent_space: str,
    level: int,
    device: Device = None,
    contexts: tuple[np.ndarray, ...] | None = None,
) -> bytes:
    """The payload of byte planes under ``method`` (one :func:`method_for` chose), contexts on ``device``, or
    given: a row of :func:`batch_contexts` (on the host) for these planes."""
    if method == EntropyMethod.ZSTD:
        return zstd.compress(planes, level)
    modelled, model = METHODS[method], model_for(method, latent_space)
    if contexts is not None and modelled.encode_contexts is not None:
        return modelled.encode_contexts(*contexts, shape, model)
    with side_stream(device):
        return modelled.encode(_symbols(planes, shape), model, **modelled.on(device))


def payload_bits(
    planes: bytes, method: EntropyMethod, shape: Shape, latent_space: str, level: int, device: Device = None
) -> float:
    """The payload's size in bits: the model's code length where the method has one (no coding), else coded."""
    modelled = METHODS.get(method)
    if modelled is None or modelled.code_length is None:
        return 8.0 * len(compress(planes, method, shape, latent_space, level, device))
    with side_stream(device):
        return modelled.code_length(_symbols(planes, shape), model_for(method, latent_space), **modelled.on(device))


@staged("entropy decoding")
def decompress(
    payload: bytes,
    method: EntropyMethod,
    mode: CodingMode,
    size: int,
    shape: Shape,
    latent_space: str,
    device: Device = None,
) -> bytes:
    """The ``size`` bytes of planes a payload holds; raises CorruptStreamError for anything malformed."""
    if method == EntropyMethod.ZSTD:
        return zstd.decompress(payload, size)
    model = model_for(method, latent_space)
    if model is None or not _int8_planes(mode, size, shape):
        raise CorruptStreamError(
            f"{method.label}-coded latents need int8 uniform symbols in a latent space with a model"
        )
    with side_stream(device):
        return METHODS[method].decode(payload, shape, model, **METHODS[method].on(device)).tobytes()
