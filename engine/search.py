"""The encoder's searches for a step and scale: a target size (``target_bpp``) and a target quality
(``target_psnr``); the denoiser strength's is :mod:`.strength_search`.

Rate: stream sizes fall as the step grows, so for a candidate scale a search in log-step space finds the finest
step whose stream fits the budget (regula falsi on the log size, to within ``SIZE_TOLERANCE`` below it; or, with
``rate_search="every"``, bisection); each try costs a quantization and the entropy model's code length (no
coding; zstd streams are compressed), never a network pass; one stream per scale is written and decoded, and the
best ``metric`` among those within ``TOLERANCE`` of the budget wins. ``"peak"`` (the default) starts at the scale
whose step is nearest ``PEAK_STEP`` (sizing the scales from the smallest up to it: no decode) and moves to the
better neighbour while the score improves; ``"climb"`` starts at the smallest scale and moves up the same way (the
score of the scale is assumed to rise, then fall); ``"every"`` tries them all.
Quality: per scale, bisection finds the coarsest step whose decoded PSNR reaches the target (each try decodes);
the smallest such stream over the scales wins (under ``"peak"`` from the smallest scale up, stopping where the
stream grows again); the kept stream's denoiser strength is then chosen once.
How the constants were chosen, and on which images, is in the README.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

from latentcodec.engine import quality
from latentcodec.engine.format import MAX_STEP
from latentcodec.engine.images import to_array
from latentcodec.engine.intake import PreparedImage
from latentcodec.engine.models.upscaler import Upscaler
from latentcodec.engine.plan import EncodePlan

if TYPE_CHECKING:
    from latentcodec.engine.decoder import Decoder

SCALES = Upscaler.scales  # the default candidate scales (a model's resizer may offer more: EncodePlan.scales)
TOLERANCE = 0.10
MIN_SEARCH_STEP = 0.02
ITERATIONS = 14  # the step is then known to 0.07% (log2 range 11.6 bits / 2**14)
QUALITY_ITERATIONS = 8  # each try decodes: the step is known to 3%
SIZE_TOLERANCE = 0.005  # regula falsi stops at a step whose size is this close below the budget
PEAK_STEP = 1.0  # the best scale's stream usually fits at about this step (held-out photos: README, "Rate control")


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


def finest_step_by_regula_falsi(size_of: Callable[[float], float], budget: float) -> float:
    """:func:`finest_step_within` in fewer tries: regula falsi (Illinois) on ``log size - log budget``, which is
    nearly linear in the log step, until the size lies within ``SIZE_TOLERANCE`` below the budget."""
    lo, hi = math.log(MIN_SEARCH_STEP), math.log(MAX_STEP)
    excess = lambda log_step: math.log(max(size_of(math.exp(log_step)), 1e-9) / budget)  # noqa: E731
    f_lo = excess(lo)
    if f_lo <= 0:
        return math.exp(lo)
    f_hi = excess(hi)
    if f_hi > 0:
        return math.exp(hi)
    kept = 0  # which end stayed put last time (Illinois: halve its value when it stays twice)
    for _ in range(ITERATIONS):
        if f_hi > -SIZE_TOLERANCE:
            break
        mid = min(max(hi - f_hi * (hi - lo) / (f_hi - f_lo), lo + 1e-9), hi - 1e-9)
        f_mid = excess(mid)
        if f_mid > 0:
            lo, f_lo = mid, f_mid
            f_hi, kept = (f_hi / 2 if kept == 1 else f_hi), 1
        else:
            hi, f_hi = mid, f_mid
            f_lo, kept = (f_lo / 2 if kept == -1 else f_lo), -1
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


def to_rate(coding_at: Callable[[float], Coding], decoder: Decoder, prepared: PreparedImage, plan: EncodePlan) -> bytes:
    """The best stream under ``metric`` within 10% of ``target_bpp`` over the candidate scales (``coding_at(scale)``
    codes the image at a scale) and steps: each scale's step searched on sizes, one stream written and decoded per
    scale tried (``rate_search``: from the scale whose step is nearest :data:`PEAK_STEP`, or the smallest, towards
    the better neighbour while the score improves; or every scale)."""
    height, width = prepared.rgb.shape[1:]
    budget = plan.options.target_bpp * width * height / 8
    reference = to_array(prepared.rgb)
    method = plan.options.rate_search
    step_for = finest_step_within if method == "every" else finest_step_by_regula_falsi
    finals: dict[bytes, Callable[[], bytes]] = {}

    @cache
    def sized(scale: float) -> tuple[Coding, float]:
        coding = coding_at(scale)
        return coding, step_for(coding.size, budget)

    @cache
    def tried(scale: float) -> Candidate:
        coding, step = sized(scale)
        candidate = _candidate(decoder, coding.stream(step), reference, plan, plan.options.metric)
        finals[candidate.data] = lambda: coding.final(step)
        return candidate

    ladder = sorted(plan.scales)
    if method == "every":
        candidates = [tried(scale) for scale in plan.scales]
    elif method == "climb":
        candidates = _climbed(ladder, tried, budget, 0, (1,))
    else:
        candidates = _climbed(ladder, tried, budget, _nearest_peak(ladder, lambda s: sized(s)[1]), (1, -1))
    return finals[choose(candidates, budget)]()


def _nearest_peak(ladder: list[float], step_at: Callable[[float], float]) -> int:
    """The index of the scale whose step is nearest :data:`PEAK_STEP` (in log): steps grow with the scale, so the
    scales are sized from the smallest up to the first whose step reaches it."""
    index = next((i for i, scale in enumerate(ladder) if step_at(scale) >= PEAK_STEP), len(ladder) - 1)
    if index and step_at(ladder[index]) >= PEAK_STEP:
        above, below = math.log(step_at(ladder[index]) / PEAK_STEP), math.log(PEAK_STEP / step_at(ladder[index - 1]))
        index -= below < above
    return index


def _climbed(
    ladder: list[float], tried: Callable[[float], Candidate], budget: float, start: int, directions: tuple[int, ...]
) -> list[Candidate]:
    """The candidates tried from ``ladder[start]`` one way (the first of ``directions`` that improves on it) while
    each beats the best so far (the score of the scale is assumed to rise, then fall)."""
    kept = [tried(ladder[start])]
    for direction in directions:
        index = start + direction
        while 0 <= index < len(ladder):
            candidate = tried(ladder[index])
            if choose([*kept, candidate], budget) != candidate.data:
                break
            kept.append(candidate)
            index += direction
        if len(kept) > 1:
            break
    return kept


def to_quality(
    coding_at: Callable[[float], Coding], decoder: Decoder, prepared: PreparedImage, plan: EncodePlan
) -> bytes:
    """The smallest stream whose decoded PSNR reaches ``target_psnr``, over the candidate scales (the best-PSNR
    stream tried when none does). Under ``rate_search="peak"`` the scales are tried from the smallest and the
    search stops at the first that reaches the target with a larger stream than the best so far (the size the
    target needs falls, then rises, with the scale); otherwise every scale, in the plan's order."""
    reference = to_array(prepared.rgb)
    reached: list[bytes] = []
    tried, finals = [], {}
    climb = plan.options.rate_search == "peak"
    for coding in map(coding_at, sorted(plan.scales) if climb else plan.scales):

        @cache
        def quality(step: float, coding=coding) -> float:
            tried.append(_candidate(decoder, coding.stream(step), reference, plan, "psnr"))
            finals[tried[-1].data] = lambda: coding.final(step)
            return tried[-1].score

        step = coarsest_step_reaching(quality, plan.options.target_psnr)
        if step is not None:
            stream = coding.stream(step)  # tried at that step: its final is recorded
            if climb and reached and len(stream) > min(map(len, reached)):
                break
            reached.append(stream)
    best = min(reached, key=len) if reached else max(tried, key=lambda c: c.score).data
    return finals[best]()


def _candidate(decoder: Decoder, data: bytes, reference, plan: EncodePlan, metric: str) -> Candidate:
    """A stream and the ``metric`` of its decoded image. Under ``"auto"`` it is decoded without the denoiser: the
    strength chosen afterwards decodes at least as well, so a target reached here holds."""
    decoded = decoder.tensors([data], denoise=not plan.choose_strength)[0]
    return Candidate(data, quality.score(metric, reference, to_array(decoded)))
