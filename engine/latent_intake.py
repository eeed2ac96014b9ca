"""Latent intake: whatever a caller hands the latent encoder becomes float32 latents ``[C, h, w]`` of a space, or an
InvalidLatentsError. One rule set for every input, as for images (:mod:`~latentcodec.engine.intake`):

- torch tensors or numpy arrays of float16, bfloat16 (tensors), float32 or float64 values;
- one latent is ``[C, h, w]`` (or ``[1, C, h, w]``); a batch is ``[B, C, h, w]`` or a sequence of single latents;
- ``C`` is the space's channel count; the grid is bounded as images are: the image it decodes to (``h`` and ``w``
  times the downsampling) has sides of at most 65535 and at most 67.1 Mpixel;
- every value is finite and within +-:data:`MAX_LATENT` (the coders' float16 ranges): NaN, infinities and
  larger values are refused, never clipped.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from latentcodec.engine.errors import InvalidLatentsError
from latentcodec.engine.format import MAX_PIXELS, MAX_SIDE, size_supported
from latentcodec.engine.latent_spaces import LatentSpace

LatentInput = torch.Tensor | np.ndarray
MAX_LATENT = 60000.0  # the largest magnitude the coders' float16 channel ranges hold
_TENSOR_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_ARRAY_DTYPES = (np.float16, np.float32, np.float64)
_DTYPES = "float16, bfloat16, float32 or float64"


def _tensor(latents: object) -> torch.Tensor:
    if isinstance(latents, np.ndarray):
        if latents.dtype not in _ARRAY_DTYPES:
            raise InvalidLatentsError(f"latents must be {_DTYPES}, not {latents.dtype}")
        array = np.ascontiguousarray(latents)
        return torch.from_numpy(array if array.flags.writeable else array.copy())  # torch warns of read-only ones
    if isinstance(latents, torch.Tensor):
        if latents.dtype not in _TENSOR_DTYPES:
            raise InvalidLatentsError(f"latents must be {_DTYPES}, not {latents.dtype}")
        return latents.detach()
    raise InvalidLatentsError(f"latents must be a torch tensor or a numpy array, not {type(latents).__name__}")


def prepare_latents(latents: object, space: LatentSpace) -> torch.Tensor:
    """One latent (``[C, h, w]`` or ``[1, C, h, w]``) checked against ``space``: float32 ``[C, h, w]``, on the
    device it came on."""
    try:
        return _prepare(latents, space)
    except InvalidLatentsError:
        raise
    except Exception as exc:  # tensors torch cannot read values of (meta, some sparse layouts...)
        raise InvalidLatentsError(f"cannot read latents: {type(exc).__name__}: {exc}") from exc


def _prepare(latents: object, space: LatentSpace) -> torch.Tensor:
    x = _tensor(latents)
    if x.ndim == 4 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 3:
        raise InvalidLatentsError(
            f"one latent is [C, h, w] (or [1, C, h, w]), not {list(x.shape)} (batches: encode_latents_batch)"
        )
    channels, height, width = x.shape
    if channels != space.channels:
        hint = " (images? Codec.latents_of(images) runs the encoder)" if channels == 3 else ""
        raise InvalidLatentsError(
            f"latents of the {space.name!r} space have {space.channels} channels, not {channels}{hint}"
        )
    image = space.image_size(height, width)
    if not size_supported(*image):
        raise InvalidLatentsError(
            f"a {height}x{width} latent grid is outside the supported range: the {image[0]}x{image[1]} image it "
            f"decodes to must have sides of 1..{MAX_SIDE} and at most {MAX_PIXELS} pixels"
        )
    x = x.float()
    if not torch.isfinite(x).all():
        raise InvalidLatentsError("latents hold NaN or infinite values")
    peak = float(x.abs().amax())
    if peak > MAX_LATENT:
        raise InvalidLatentsError(f"latents hold values of magnitude {peak:g}, over the limit of {MAX_LATENT:g}")
    return x


def batch_items(latents: object) -> Sequence[object]:
    """The latents of a batch: the rows of a ``[B, C, h, w]`` tensor or array, or a sequence's items."""
    if isinstance(latents, (torch.Tensor, np.ndarray)):
        if latents.ndim != 4:
            raise InvalidLatentsError(
                f"a batch of latents is [B, C, h, w] or a sequence of [C, h, w], not {list(latents.shape)}"
            )
        return list(latents)
    if isinstance(latents, (str, bytes)) or not isinstance(latents, Sequence):
        kind = type(latents).__name__
        raise InvalidLatentsError(f"a batch of latents is a tensor, an array or a sequence, not {kind}")
    return latents
