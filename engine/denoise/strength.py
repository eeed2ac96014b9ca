"""The denoising strengths ``denoiser="auto"`` chooses among: the same stream, its denoiser conditioned on
different noise levels.

The latent denoiser's correction grows with the noise level the stream records, so that level is the
strength of the denoising. The encoder measures the RMS quantization error, but the best level varies by
image: on the 4 held-out training images (not Kodak) half the measured level was often best and the full
level cost up to 1.6 dB on one of them. So the encoder decodes each stream without the denoiser and at
each strength below (fractions of the measured level), and keeps the variant with the best PSNR.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from latentcodec.engine import bitstream, rate_control

STRENGTHS = (0.5, 0.7, 1.0)  # fractions of the measured noise level, chosen on held-out training images


def variants(data: bytes) -> list[bytes]:
    """``data`` without its denoiser, then with it at each of :data:`STRENGTHS` (``data`` must name one)."""
    level = bitstream.unpack(data).header.denoiser.noise_level
    return [bitstream.without_denoiser(data), *(bitstream.with_noise_level(data, s * level) for s in STRENGTHS)]


def choose(reference: torch.Tensor, decoded: Sequence[torch.Tensor]) -> int:
    """Index of the decode of :func:`variants` with the best PSNR against ``reference`` (ties: the first)."""
    scores = [rate_control.psnr(reference, image) for image in decoded]
    return scores.index(max(scores))
