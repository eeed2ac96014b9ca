"""Rewriting a stream's denoiser entry, symbols untouched (the denoiser-strength search, tests, benches)."""

from __future__ import annotations

from dataclasses import replace

from latentcodec.engine.bitstream import DenoiserRef, Stream, pack, unpack


def _with_denoiser(stream: Stream, denoiser: DenoiserRef | None) -> bytes:
    return pack(replace(stream, header=replace(stream.header, denoiser=denoiser)))


def with_noise_level(data: bytes, noise_level: float) -> bytes:
    """The same stream with its denoiser conditioned on ``noise_level`` (stored as float16)."""
    stream = unpack(data)
    if stream.header.denoiser is None:
        raise ValueError("the stream names no denoiser")
    return _with_denoiser(stream, replace(stream.header.denoiser, noise_level=noise_level))


def without_denoiser(data: bytes) -> bytes:
    """The same stream asking for no denoiser (as if encoded with ``denoiser=None``)."""
    return _with_denoiser(unpack(data), None)
