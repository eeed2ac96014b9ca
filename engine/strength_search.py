"""The denoiser strength under ``denoiser="auto"``: each stream is decoded without its denoiser and with it at each
of ``STRENGTHS`` (fractions of the measured noise level), on sampled windows (``strength_by="crops"``) or the whole
image (``"pixels"``), and the closest to the image is kept. How the constants were chosen, and on which images, is
in the README.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch

from latentcodec.engine import bitstream, quality, stream_edits
from latentcodec.engine.images import to_array
from latentcodec.engine.intake import PreparedImage
from latentcodec.engine.pipeline import Outcomes
from latentcodec.engine.results import Result

if TYPE_CHECKING:
    from latentcodec.engine.decoder import Decoder

STRENGTHS = (0.4, 0.6, 1.2)  # fractions of the measured noise level, chosen on held-out training images
WINDOW, MARGIN = 12, 4  # latents per side of each sampled window's scored part, and the context decoded around it


def windows(height: int, width: int) -> list[tuple[slice, slice, slice, slice]]:
    """Where the strength search samples latents ``height x width``: ``(rows, cols)`` to decode and ``(rows,
    cols)`` of that decode to score (in latents): two windows on the diagonal, or the whole grid when that is no
    larger."""
    side = WINDOW + 2 * MARGIN
    if height < side or width < side or 2 * side * side >= height * width:  # the whole grid costs no more
        return [(slice(0, height), slice(0, width), slice(0, height), slice(0, width))]
    picked = []
    for fraction in (1 / 3, 2 / 3):
        top = min(max(0, round(height * fraction) - WINDOW // 2 - MARGIN), height - WINDOW - 2 * MARGIN)
        left = min(max(0, round(width * fraction) - WINDOW // 2 - MARGIN), width - WINDOW - 2 * MARGIN)
        inner = slice(MARGIN, MARGIN + WINDOW)
        picked.append((slice(top, top + WINDOW + 2 * MARGIN), slice(left, left + WINDOW + 2 * MARGIN), inner, inner))
    return picked


def sampled_strengths(
    decode: Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor],
    quantized: torch.Tensor,
    images: torch.Tensor,
    down: int,
) -> list[float | None]:
    """Per image, ``None`` (no denoiser) or the one of :data:`STRENGTHS` whose decode of a few sampled windows
    (:func:`windows`) is closest to the image there (squared error): a few percent of the pixels decoded per
    strength, where deciding by whole decodes costs four of them. ``decode(latents, owners, fractions)`` decodes
    latents ``[N, C, h, w]`` as the decoder will: each row (of image ``owners[n]``) denoised at ``fractions[n]``
    of that image's noise level, or not at all when ``fractions`` is None; ``images`` ``[B, 3, H, W]`` in [0, 1]
    are the ones the latents were made from. Two decodes in all: every window undenoised, then every window at
    every strength."""
    picked, batch = windows(*quantized.shape[-2:]), len(quantized)
    stacked = torch.cat([quantized[..., rows, cols] for rows, cols, _, _ in picked])  # window-major, then image
    owners = torch.arange(batch, device=quantized.device).repeat(len(picked))
    fractions = torch.tensor(STRENGTHS, device=quantized.device).repeat_interleave(len(stacked))
    tries = len(STRENGTHS)
    decoded = [
        decode(stacked, owners, None),
        *decode(stacked.repeat(tries, 1, 1, 1), owners.repeat(tries), fractions).chunk(tries),
    ]
    errors = torch.zeros(1 + tries, batch, device=quantized.device)
    for k, (rows, cols, inner_rows, inner_cols) in enumerate(picked):
        target = images[..., rows.start * down : rows.stop * down, cols.start * down : cols.stop * down]
        target = target[..., inner_rows.start * down : inner_rows.stop * down, inner_cols.start * down :]
        target = target[..., : (inner_cols.stop - inner_cols.start) * down].float()
        for n, all_windows in enumerate(decoded):
            rgb = all_windows[k * batch : (k + 1) * batch]
            rgb = rgb[..., inner_rows.start * down : inner_rows.stop * down, inner_cols.start * down :]
            rgb = rgb[..., : target.shape[-1]][..., : target.shape[-2], :]
            errors[n] += (rgb.float() - target[..., : rgb.shape[-2], : rgb.shape[-1]]).square().flatten(1).sum(1)
    best = errors.argmin(0).tolist()
    return [None if b == 0 else STRENGTHS[b - 1] for b in best]


def strength_variants(data: bytes) -> list[bytes]:
    """``data`` without its denoiser, then with it at each of :data:`STRENGTHS` (``data`` must name one)."""
    level = bitstream.unpack(data).header.denoiser.noise_level
    return [stream_edits.without_denoiser(data), *(stream_edits.with_noise_level(data, s * level) for s in STRENGTHS)]


def best_variant(reference: torch.Tensor, decoded: Sequence[torch.Tensor], metric: str = "psnr") -> int:
    """Index of the decode of :func:`strength_variants` with the best ``metric`` against ``reference`` (ties: the
    first, the stream without the denoiser)."""
    pixels = to_array(reference)
    scores = [quality.score(metric, pixels, to_array(image)) for image in decoded]
    return scores.index(max(scores))


def choose_strengths(
    decoder: Decoder, ready: dict[int, PreparedImage], outcomes: Outcomes[bytes], batch_size: int, metric: str
) -> None:
    """Revise each encoded stream to its best :func:`strength_variants`, decoding a batch of variants at a time."""
    encoded = [i for i in ready if outcomes[i].ok]
    per_stream = len(STRENGTHS) + 1
    streams_per_batch = max(1, batch_size // per_stream)
    for start in range(0, len(encoded), streams_per_batch):
        chunk = encoded[start : start + streams_per_batch]
        choices = [strength_variants(outcomes[i].value) for i in chunk]
        decoded: Outcomes = Outcomes(len(chunk) * per_stream)
        decoder.decode([variant for variants in choices for variant in variants], decoded, to_pil=False, denoise=True)
        for n, i in enumerate(chunk):
            tried = decoded.results()[n * per_stream : (n + 1) * per_stream]
            if failed := next((r for r in tried if not r.ok), None):
                outcomes.revise(i, failed)  # a stream we cannot decode is no result
                continue
            best = best_variant(ready[i].rgb, [r.value.rgb for r in tried], metric)
            outcomes.revise(i, Result(choices[n][best]))
