"""Rate control: hit a target size (or quality) by choosing the uniform step (bisection) and the encode scale.

Stream sizes fall as the step grows, so for each candidate scale a bisection in log-step space finds the finest
step whose stream fits the budget; each try costs a quantization and a zstd call, never a network pass. The
scales' results are then decoded and the best PSNR among those within ``TOLERANCE`` of the budget wins:
downscaled encodes are the strong operating points at low rates, full-size ones at high rates.

A quality target works the other way round: per scale, bisection finds the coarsest step whose decoded PSNR
reaches the target (each try decodes), and the smallest such stream over the scales wins.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from latentcodec.engine.coding import MAX_STEP
from latentcodec.engine.images import to_uint8

SCALES = (1.0, 0.71, 0.5, 0.35)
TOLERANCE = 0.10
MIN_SEARCH_STEP = 0.02
ITERATIONS = 14  # the step is then known to 0.07% (log2 range 11.6 bits / 2**14)
QUALITY_ITERATIONS = 8  # each try decodes: the step is known to 3%


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
    psnr: float


def choose(candidates: list[Candidate], budget: float) -> bytes:
    """The best-PSNR candidate within the tolerance of the budget, else the one closest to it."""
    within = [c for c in candidates if abs(len(c.data) - budget) <= TOLERANCE * budget]
    pool = within or [min(candidates, key=lambda c: abs(len(c.data) - budget))]
    return max(pool, key=lambda c: c.psnr).data


def psnr(reference: torch.Tensor, decoded: torch.Tensor) -> float:
    """PSNR in dB of two ``[3, H, W]`` images in [0, 1], compared as 8-bit pixels."""
    error = (to_uint8(reference).float() - to_uint8(decoded).float()).pow(2).mean().item()
    return math.inf if error == 0 else 10 * math.log10(255**2 / error)
