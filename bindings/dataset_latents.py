"""Latent caches by dataset jobs: images (the encoder pass on the worker's device) or latent files (safetensors,
npy) in, latent streams of the codec's latent space out (:meth:`Codec.encode_latents_batch`); one
:class:`Result` per input, a bad input alone."""

from __future__ import annotations

import io
from collections.abc import Sequence

from latentcodec.engine.errors import InvalidInputError, LatentCodecError
from latentcodec.engine.results import Result

LATENT_SUFFIXES = (".safetensors", ".npy")  # latent files a latent cache job reads besides images


def latent_options(options: dict) -> dict:
    """``options`` checked as :class:`LatentOptions` (ValueError before any work), as plain keywords."""
    from latentcodec.engine.latent_options import LatentOptions

    resolved = LatentOptions.resolve(None, options)
    return {name: getattr(resolved, name) for name in LatentOptions.names()}


def latent_streams(codec, payloads: Sequence[bytes], keys: Sequence[str], options: dict) -> list[Result]:
    """A latent stream per input: an image (the encoder pass runs), or a latent file (``key`` ends with
    ``.safetensors`` or ``.npy``); each input's own error when it cannot be read or coded."""
    from latentcodec.engine.intake import prepare

    results: list[Result] = []
    for payload, key in zip(payloads, keys, strict=True):
        try:
            if key.lower().endswith(LATENT_SUFFIXES):
                latents = read_latent_file(payload, key)
            else:
                latents = codec.latents_of(prepare(payload, keep_alpha=False).rgb[None])
            results.append(codec.encode_latents_batch([latents], **options)[0])  # [C, h, w] or [1, C, h, w]
        except LatentCodecError as exc:
            results.append(Result(error=exc))
    return results


def read_latent_file(data: bytes, name: str):
    """The one latent tensor of a ``.safetensors`` file (its only tensor, or ``latents``) or a ``.npy`` array."""
    import numpy as np
    import torch

    try:
        if name.lower().endswith(".npy"):
            return torch.from_numpy(np.load(io.BytesIO(data), allow_pickle=False).copy())
        from safetensors.torch import load

        tensors = load(data)
    except Exception as exc:  # numpy and safetensors raise anything on hostile files
        raise InvalidInputError(f"cannot read {name}: {type(exc).__name__}: {exc}") from None
    if len(tensors) != 1 and "latents" not in tensors:
        raise InvalidInputError(f"{name} holds {len(tensors)} tensors and none named 'latents'")
    return tensors["latents"] if "latents" in tensors else next(iter(tensors.values()))
