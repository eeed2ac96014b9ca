"""Uniform steps for latent streams: the finest a latent's magnitudes allow, and rate control on the latent error
(the coarsest step whose RMS error reaches a target). Steps are float32, as streams store them."""

from __future__ import annotations

import math

import numpy as np
import torch

from latentcodec.engine.format import MAX_STEP, MIN_STEP

MAX_SYMBOL = 32767  # uniform symbols are int16 at most
_ROUNDS = 40  # bisection rounds on the log of the step: far below float32's resolution between MIN and MAX


def _f32(value: float) -> float:
    return float(np.float32(value))


def finest_step(latents: torch.Tensor) -> float:
    """The finest step (at least MIN_STEP) whose symbols of ``latents`` all fit in int16, so no latent is clipped
    and every one is within ``step / 2``."""
    peak = float(latents.abs().amax()) if latents.numel() else 0.0
    step = _f32(max(MIN_STEP, peak / MAX_SYMBOL))
    while peak / step > MAX_SYMBOL:
        step = float(np.nextafter(np.float32(step), np.float32(math.inf)))
    return step


def uniform_rmse(latents: torch.Tensor, step: float) -> float:
    """The RMS error of ``latents`` quantized with ``step`` (as the uniform coder rounds them)."""
    quantized = latents.float().div(step).round_().clamp_(-MAX_SYMBOL, MAX_SYMBOL).mul_(step)
    return float((quantized - latents.float()).square_().mean().sqrt_())


def step_for_rmse(latents: torch.Tensor, target: float) -> float:
    """The coarsest float32 step (up to MAX_STEP) whose RMS error on ``latents`` is at most ``target``; the finest
    step allowed (:func:`finest_step`) when none is."""
    fine = finest_step(latents)
    if uniform_rmse(latents, MAX_STEP) <= target:
        return MAX_STEP
    if uniform_rmse(latents, fine) > target:
        return fine
    lo, hi = fine, MAX_STEP  # the error at lo is within the target, at hi it is not
    for _ in range(_ROUNDS):
        middle = _f32(math.sqrt(lo * hi))
        if middle in (lo, hi):
            break
        if uniform_rmse(latents, middle) <= target:
            lo = middle
        else:
            hi = middle
    return lo
