"""Module-level latent streams: latents of a named latent space <-> streams, and the latents of any stream.

No network loads: the coders run where the latents are (on decode, on ``device``: the CPU unless told), the entropy
stage on shared host threads. Options: :class:`~latentcodec.engine.latent_options.LatentOptions`.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import torch

from latentcodec.engine.devices import resolve_device
from latentcodec.engine.info import StreamInput
from latentcodec.engine.latent_intake import LatentInput, batch_items
from latentcodec.engine.latent_options import LatentOptions
from latentcodec.engine.latent_spaces import DEFAULT_LATENT_SPACE
from latentcodec.engine.latent_spaces import latent_space as space_named
from latentcodec.engine.latent_streams import LatentStreams
from latentcodec.engine.pipeline import BatchPipeline, Progress
from latentcodec.engine.results import Result

__all__ = ["decode_latents", "decode_latents_batch", "encode_latents", "encode_latents_batch"]

_streams: dict[str, LatentStreams] = {}
_lock = threading.Lock()


def latent_streams_on(device: str | torch.device | None = "cpu") -> LatentStreams:
    """The shared :class:`LatentStreams` of ``device`` (DeviceError for one this machine lacks)."""
    resolved = resolve_device(device)
    with _lock:
        if str(resolved) not in _streams:
            _streams[str(resolved)] = LatentStreams(BatchPipeline(8), resolved)
        return _streams[str(resolved)]


def encode_latents(
    latents: LatentInput, *, latent_space: str = DEFAULT_LATENT_SPACE, options: LatentOptions | None = None, **overrides
) -> bytes:
    """A latent stream of one latent ``[C, h, w]`` (or ``[1, C, h, w]``) of ``latent_space``: a torch tensor or
    numpy array of float16, bfloat16, float32 or float64 values."""
    return encode_latents_batch([latents], latent_space=latent_space, options=options, **overrides)[0].unwrap()


def encode_latents_batch(
    latents: LatentInput | Sequence[LatentInput],
    *,
    latent_space: str = DEFAULT_LATENT_SPACE,
    progress: Progress | None = None,
    options: LatentOptions | None = None,
    **overrides,
) -> list[Result[bytes]]:
    """One latent stream per latent of a ``[B, C, h, w]`` batch or a sequence of latents (shapes may differ); one
    :class:`Result` per latent. Unknown spaces (UnknownModelError) and bad options (ValueError) raise at once."""
    items = batch_items(latents)
    space, resolved = space_named(latent_space), LatentOptions.resolve(options, overrides)
    device = next((item.device for item in items if isinstance(item, torch.Tensor)), torch.device("cpu"))
    return latent_streams_on(device).encode(items, space, resolved, progress)


def decode_latents(
    data: StreamInput, *, device: str | torch.device | None = "cpu", dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """The latents ``[C, h, w]`` of a stream (bytes, or the file at a path): a latent stream's, or the coded
    latents of an image stream (its whole latent grid, ``ceil(coded size / downsampling)``)."""
    return decode_latents_batch([data], device=device, dtype=dtype)[0].unwrap()


def decode_latents_batch(
    streams: Sequence[StreamInput],
    *,
    device: str | torch.device | None = "cpu",
    dtype: torch.dtype = torch.float32,
    progress: Progress | None = None,
) -> list[Result[torch.Tensor]]:
    """The latents of many streams; one :class:`Result` per stream."""
    return latent_streams_on(device).decode(streams, dtype, progress)
