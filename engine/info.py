"""What a stream's header says, without decoding it (no torch: front ends inspect streams cheaply)."""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass

from latentcodec.engine import bitstream
from latentcodec.engine.errors import CorruptStreamError, InvalidInputError, NotAStreamError
from latentcodec.engine.format import MAX_STREAM_BYTES, CodingMode, uniform_params

StreamInput = bytes | bytearray | memoryview | str | os.PathLike


@dataclass(frozen=True)
class StreamInfo:
    """What a stream's header says, without decoding it."""

    version: int
    model: str  # the model that made an image stream ("" for a latent stream)
    latent_space: str | None  # a latent stream's latent space (None for an image stream)
    fingerprint: str
    mode: str
    entropy: str
    width: int
    height: int
    coded_width: int
    coded_height: int
    color: str
    alpha: bool
    denoiser: str | None
    noise_level: float | None
    decoder_noise_level: float | None
    step: float | None  # a uniform stream's step (latent units)
    step_table: int | None  # and its table of steps per channel (0: one step for every channel)
    params_bytes: int
    latent_bytes: int
    alpha_bytes: int
    total_bytes: int
    bpp: float

    def as_dict(self) -> dict:
        return asdict(self)


def read_stream(source: StreamInput) -> bytes:
    """The stream ``source`` holds: bytes as they are, or the contents of the file at a path."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    if not isinstance(source, (str, os.PathLike)):
        raise NotAStreamError(f"expected a stream (bytes) or a path, got {type(source).__name__}")
    return _read_file(source)


def _read_file(path: str | os.PathLike) -> bytes:
    """A file's bytes; refused unread past MAX_STREAM_BYTES, which no stream reaches."""
    name = os.fsdecode(path)
    try:
        with open(path, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            data = b"" if size > MAX_STREAM_BYTES else file.read(MAX_STREAM_BYTES + 1)  # pipes report no size
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        raise InvalidInputError(f"cannot read {name}: {getattr(exc, 'strerror', None) or exc}") from None
    if max(size, len(data)) > MAX_STREAM_BYTES:
        raise CorruptStreamError(f"{name} is larger than any latentcodec stream ({MAX_STREAM_BYTES} bytes)")
    return data


def info(data: StreamInput) -> StreamInfo:
    """Parse and validate a stream's container (bytes, or a path to read) and describe it."""
    data = read_stream(data)
    stream = bitstream.unpack(data)
    h = stream.header
    uniform = uniform_params(stream.params) if h.mode is CodingMode.UNIFORM else None
    return StreamInfo(
        version=h.version,
        model=h.model_id,
        latent_space=h.latent_space,
        fingerprint=h.fingerprint.hex(),
        mode=h.mode.label,
        entropy=h.entropy.label,
        width=h.width,
        height=h.height,
        coded_width=h.coded_width,
        coded_height=h.coded_height,
        color=h.kind.pil_mode,
        alpha=h.has_alpha,
        denoiser=h.denoiser.denoiser_id if h.denoiser else None,
        noise_level=h.denoiser.noise_level if h.denoiser else None,
        decoder_noise_level=h.noise_level,
        step=uniform[0] if uniform and math.isfinite(uniform[0]) else None,  # a hostile stream's NaN: none
        step_table=uniform[1] if uniform else None,
        params_bytes=len(stream.params),
        latent_bytes=len(stream.latents),
        alpha_bytes=len(stream.alpha),
        total_bytes=len(data),
        bpp=8 * len(data) / (h.width * h.height),
    )
