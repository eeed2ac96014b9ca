"""What a stream's header says, without decoding it (no torch: front ends inspect streams cheaply)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from latentcodec.engine import bitstream


@dataclass(frozen=True)
class StreamInfo:
    """What a stream's header says, without decoding it."""

    version: int
    model: str
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
    params_bytes: int
    latent_bytes: int
    alpha_bytes: int
    total_bytes: int
    bpp: float

    def as_dict(self) -> dict:
        return asdict(self)


def info(data: bytes) -> StreamInfo:
    """Parse and validate a stream's container and describe it."""
    stream = bitstream.unpack(data)
    h = stream.header
    return StreamInfo(
        version=h.version,
        model=h.model_id,
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
        params_bytes=len(stream.params),
        latent_bytes=len(stream.latents),
        alpha_bytes=len(stream.alpha),
        total_bytes=len(data),
        bpp=8 * len(data) / (h.width * h.height),
    )
