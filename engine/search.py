"""The encoder's searches: a target size (``target_bpp``), a target quality (``target_psnr``) and the denoiser
strength (``denoiser="auto"``).

Rate: stream sizes fall as the step grows, so for each candidate scale a bisection in log-step space finds the
finest step whose stream fits the budget; each try costs a quantization and the entropy model's code length (no
coding; zstd streams are compressed), never a network pass; one stream per scale is written.
The scales' results are decoded and the best PSNR among those within ``TOLERANCE`` of the budget wins.
Quality: per scale, bisection finds the coarsest step whose decoded PSNR reaches the target (each try decodes);
the smallest such stream over the scales wins; the kept stream's denoiser strength is then chosen once.
Strength: each stream is decoded without its denoiser and with it at each of ``STRENGTHS`` (fractions of the
measured noise level), sampled windows of it (``strength_by="crops"``) or the whole image (``"pixels"``), and the
closest to the image is kept. How the constants
were chosen, and on which images, is in the README.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

import torch

from latentcodec.engine import bitstream, quality, stream_edits
from latentcodec.engine.format import MAX_STEP
from latentcodec.engine.images import to_array
from latentcodec.engine.intake import PreparedImage
from latentcodec.engine.pipeline import Outcomes
from latentcodec.engine.plan import EncodePlan
from latentcodec.engine.results import Result

if TYPE_CHECKING:
    from latentcodec.engine.decoder import Decoder

SCALES = (1.0, 0.71, 0.5, 0.35)
TOLERANCE = 0.10
MIN_SEARCH_STEP = 0.02
ITERATIONS = 14  # the step is then known to 0.07% (log2 range 11.6 bits / 2**14)
QUALITY_ITERATIONS = 8  # each try decodes: the step is known to 3%
STRENGTHS = (0.4, 0.6, 1.2)  # fractions of the measured noise level, chosen on held-out training images


def finest_step_within(size_of: Callable[[float], int], budget: float) -> float:
    """The smallest step in [MIN_SEARCH_STEP, MAX_STEP] whose stream size is at most ``budget`` bytes
    (the coarsest step when none fits)."""
    lo, hi = math.log(MIN_SEARCH_STEP), math.log(MAX_STEP)
    if size_of(math.exp(lo)) <= budget:
        return math.exp(lo)
    if size_of(math.exp(hi)) > budget:
        return math.exp(hi)
    for _ in range(ITERATIONS):
        mid = (lo + hi) / 2
        if size_of(math.exp(mid)) > budget:
            lo = mid
        else:
            hi = mid
    return math.exp(hi)


def coarsest_step_reaching(quality_of: Callable[[float], float], target: float) -> float | None:
    """The largest step in [MIN_SEARCH_STEP, MAX_STEP] whose quality is at least ``target`` (None if even
    the finest step falls short). Quality is assumed to fall as the step grows."""
    lo, hi = math.log(MIN_SEARCH_STEP), math.log(MAX_STEP)
    if quality_of(math.exp(lo)) < target:
        return None
    if quality_of(math.exp(hi)) >= target:
        return math.exp(hi)
    for _ in range(QUALITY_ITERATIONS):
        mid = (lo + hi) / 2
        if quality_of(math.exp(mid)) >= target:
            lo = mid
        else:
            hi = mid
    return math.exp(lo)


@dataclass(frozen=True)
class Candidate:
    data: bytes
    score: float  # of its decoded image under the search's metric (higher is better)


def choose(candidates: list[Candidate], budget: float) -> bytes:
    """The best-scoring candidate within the tolerance of the budget, else the one closest to it."""
    within = [c for c in candidates if abs(len(c.data) - budget) <= TOLERANCE * budget]
    pool = within or [min(candidates, key=lambda c: abs(len(c.data) - budget))]
    return max(pool, key=lambda c: c.score).data


@dataclass(frozen=True)
class Coding:
    """One candidate scale's codings, over latents computed once: ``step -> stream`` (the searches' candidates),
    ``step -> its size in bytes`` (known without entropy coding where the method allows) and ``step -> the
    stream to keep`` (its denoiser strength chosen, where that is decided at encode time)."""

    stream: Callable[[float], bytes]
    size: Callable[[float], float]
    final: Callable[[float], bytes]


def to_rate(codings: Iterable[Coding], decoder: Decoder, prepared: PreparedImage, plan: EncodePlan) -> bytes:
    """The best stream under ``metric`` within 10% of ``target_bpp`` over the candidate scales and steps: each
    scale's step bisected on sizes, one stream written per scale."""
    height, width = prepared.rgb.shape[1:]
    budget = plan.options.target_bpp * width * height / 8
    reference = to_array(prepared.rgb)
    candidates, finals = [], {}
    for coding in codings:
        step = finest_step_within(coding.size, budget)
        candidates.append(_candidate(decoder, coding.stream(step), reference, plan, plan.options.metric))
        finals[candidates[-1].data] = lambda coding=coding, step=step: coding.final(step)
    return finals[choose(candidates, budget)]()


def to_quality(codings: Iterable[Coding], decoder: Decoder, prepared: PreparedImage, plan: EncodePlan) -> bytes:
    """The smallest stream whose decoded PSNR reaches ``target_psnr``, over the candidate scales (the best-PSNR
    stream tried when none does)."""
    reference = to_array(prepared.rgb)
    reached, tried, finals = [], [], {}
    for coding in codings:

        @cache
        def quality(step: float, coding=coding) -> float:
            tried.append(_candidate(decoder, coding.stream(step), reference, plan, "psnr"))
            finals[tried[-1].data] = lambda: coding.final(step)
            return tried[-1].score

        step = coarsest_step_reaching(quality, plan.options.target_psnr)
        if step is not None:
            reached.append(coding.stream(step))  # tried at that step: its final is recorded
    best = min(reached, key=len) if reached else max(tried, key=lambda c: c.score).data
    return finals[best]()


def _candidate(decoder: Decoder, data: bytes, reference, plan: EncodePlan, metric: str) -> Candidate:
    """A stream and the ``metric`` of its decoded image. Under ``"auto"`` it is decoded without the denoiser: the
    strength chosen afterwards decodes at least as well, so a target reached here holds."""
    decoded = decoder.tensors([data], denoise=not plan.choose_strength)[0]
    return Candidate(data, quality.score(metric, reference, to_array(decoded)))


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
    decode: Callable[[torch.Tensor, float | None], torch.Tensor],
    quantized: torch.Tensor,
    images: torch.Tensor,
    down: int,
) -> list[float | None]:
    """Per image, ``None`` (no denoiser) or the one of :data:`STRENGTHS` whose decode of a few sampled windows
    (:func:`windows`) is closest to the image there (squared error): a few percent of the pixels decoded per
    strength, where deciding by whole decodes costs four of them. ``decode(latents, strength)`` decodes latents
    ``[B, C, h, w]`` as the decoder will (denoised at that fraction of each image's noise level, or not);
    ``images`` ``[B, 3, H, W]`` in [0, 1] are the ones the latents were made from."""
    height, width = quantized.shape[-2:]
    errors = torch.zeros(1 + len(STRENGTHS), len(quantized), device=quantized.device)
    for rows, cols, inner_rows, inner_cols in windows(height, width):
        target = images[..., rows.start * down : rows.stop * down, cols.start * down : cols.stop * down]
        target = target[..., inner_rows.start * down : inner_rows.stop * down, inner_cols.start * down :]
        target = target[..., : (inner_cols.stop - inner_cols.start) * down].float()
        for n, strength in enumerate((None, *STRENGTHS)):
            rgb = decode(quantized[..., rows, cols], strength)
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
