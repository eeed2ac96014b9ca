"""Encoder-side latent refinement: gradient descent through the frozen decoder on the quantized latents.

The encoder's latents are good for the float decoder, not for what the decoder sees after rounding. Refinement
minimises ``MSE(decode(Q(z)), image) + rate_weight(step) * mean|Q(z) / step|`` over ``z`` with Adam (``decode``
runs the stream's denoiser first, as the decoder will), rounding with a straight-through gradient, so the
symbols move to where the decoded picture is best for the bits they cost.

The rate weight grows with the square of the step: one symbol more costs about the same bits at any step,
while the distortion it can remove grows with the step squared (with a constant weight the rate grew
several-fold at coarse steps: measurements in the README, "Coding modes"). Refinement is opt-in.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

RATE_WEIGHT = 1e-2  # at step 1; see rate_weight
LEARNING_RATE = 0.05  # in units of the quantization step


def rate_weight(step: float) -> float:
    """Weight of the rate term at quantization ``step``."""
    return RATE_WEIGHT * step * step


def refine(
    decode: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    latents: torch.Tensor,
    images: torch.Tensor,
    step: float,
    steps: int,
) -> torch.Tensor:
    """Refined float latents for images ``[B, 3, H, W]`` in [0, 1].

    ``decode(quantized, noise_level)`` is the decoder side as the stream will run it (denoiser included); the
    noise level ``[B]`` is the RMS quantization error, as the encoder will record it.

    Runs in float32 with gradients; returns the input latents unchanged if the optimisation goes non-finite.
    """
    target = images.float()
    z = latents.detach().float().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([z], lr=LEARNING_RATE * step)
    weight = rate_weight(step)
    with torch.enable_grad():
        for _ in range(steps):
            quantized = z + (torch.round(z / step) * step - z).detach()  # straight-through rounding
            noise = (quantized - z).detach().square().flatten(1).mean(1).sqrt()
            loss = F.mse_loss(decode(quantized, noise).float(), target) + weight * (quantized / step).abs().mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    refined = z.detach()
    return refined if torch.isfinite(refined).all() else latents
