"""Encoder-side latent refinement: gradient descent through the frozen decoder on the quantized latents.

The encoder's latents are good for the float decoder, not for what the decoder sees after rounding. Refinement
minimises ``MSE(decode(Q(z)), image) + RATE_WEIGHT * mean|Q(z) / step|`` over ``z`` with Adam (``decode`` runs the
stream's denoiser first, as the decoder will), rounding with a
straight-through gradient, so the symbols move to where the decoded picture is best for the bits they cost.
``RATE_WEIGHT`` and the learning rate were chosen on a training image (not Kodak): at step 2.0 on a 256x256
crop, 20 steps lifted PSNR by 5 dB for 8% more bytes; at step 1.0 by 1.4 dB for 25% fewer bytes.
Measured on four 256x256 Kodak centre crops (20 steps): 1.5-1.8 dB better PSNR at equal bpp between 0.75 and
1.2 bpp, but at coarse steps (2.8, 4.0) the rate term is too weak and the rate grows several-fold (0.13 ->
0.69 bpp at step 4.0). A step-aware rate weight (or an entropy model) is the next step; until then refinement
is opt-in.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

RATE_WEIGHT = 1e-2
LEARNING_RATE = 0.05  # in units of the quantization step


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
    with torch.enable_grad():
        for _ in range(steps):
            quantized = z + (torch.round(z / step) * step - z).detach()  # straight-through rounding
            noise = (quantized - z).detach().square().flatten(1).mean(1).sqrt()
            loss = F.mse_loss(decode(quantized, noise).float(), target) + RATE_WEIGHT * (quantized / step).abs().mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    refined = z.detach()
    return refined if torch.isfinite(refined).all() else latents
