"""The encoder's searches: a target size (``target_bpp``), a target quality (``target_psnr``) and the denoiser
strength (``denoiser="auto"``).

Rate: stream sizes fall as the step grows, so for each candidate scale a bisection in log-step space finds the
finest step whose stream fits the budget; each try costs a quantization and a zstd call, never a network pass.
The scales' results are decoded and the best PSNR among those within ``TOLERANCE`` of the budget wins.
Quality: per scale, bisection finds the coarsest step whose decoded PSNR reaches the target (each try decodes);
the smallest such stream over the scales wins. Strength: each stream is decoded without its denoiser and with it
at each of ``STRENGTHS`` (fractions of the measured noise level) and the best PSNR is kept. How the constants
were chosen, and on which images, is in the README.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
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
    from latentcodec.engine.encoder import Encoder

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


def to_rate(encoder: Encoder, prepared: PreparedImage, plan: EncodePlan) -> bytes:
    """The best stream under ``metric`` within 10% of ``target_bpp`` over the candidate scales and steps."""
    height, width = prepared.rgb.shape[1:]
    budget = plan.options.target_bpp * width * height / 8
    reference = to_array(prepared.rgb)
    candidates = []
    for stream in _streams_at_scales(encoder, prepared, plan):
        data = stream(finest_step_within(lambda step, stream=stream: len(stream(step)), budget))
        candidates.append(_candidate(encoder.decoder, data, reference, plan, plan.options.metric))
    return choose(candidates, budget)


def to_quality(encoder: Encoder, prepared: PreparedImage, plan: EncodePlan) -> bytes:
    """The smallest stream whose decoded PSNR reaches ``target_psnr``, over the candidate scales (the best-PSNR
    stream tried when none does)."""
    reference = to_array(prepared.rgb)
    reached, tried = [], []
    for stream in _streams_at_scales(encoder, prepared, plan):

        @cache
        def quality(step: float, stream=stream) -> float:
            tried.append(_candidate(encoder.decoder, stream(step), reference, plan, "psnr"))
            return tried[-1].score

        step = coarsest_step_reaching(quality, plan.options.target_psnr)
        if step is not None:
            reached.append(stream(step))
    return min(reached, key=len) if reached else max(tried, key=lambda c: c.score).data


def _streams_at_scales(
    encoder: Encoder, prepared: PreparedImage, plan: EncodePlan
) -> Iterator[Callable[[float], bytes]]:
    """For each of ``SCALES``, ``step -> stream`` (cached) over latents computed once for that scale."""
    from latentcodec.engine.encoder import EncodeJob

    for scale in SCALES:
        at_scale = plan.with_options(scale=scale, target_bpp=None, target_psnr=None, quality=None)
        job = EncodeJob.of(prepared, at_scale.options)
        latents = encoder.session.latents(job.rgb[None])
        yield cache(lambda step, job=job, latents=latents, at_scale=at_scale: encoder.stream(
            job, latents, at_scale.with_options(step=step)
        ))  # fmt: skip


def _candidate(decoder: Decoder, data: bytes, reference, plan: EncodePlan, metric: str) -> Candidate:
    """A stream and the ``metric`` of its decoded image. Under ``"auto"`` it is decoded without the denoiser: the
    strength chosen afterwards decodes at least as well, so a target reached here holds."""
    decoded = decoder.tensors([data], denoise=not plan.choose_strength)[0]
    return Candidate(data, quality.score(metric, reference, to_array(decoded)))


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
