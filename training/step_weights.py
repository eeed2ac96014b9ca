"""The measurement behind the uniform coder's steps per channel (``engine/coders/step_weights.py``).

Each latent channel's effect on the decoded picture: on 256x256 centre crops of ``../shared/data/photos`` (the
held-out last 4 excluded; never Kodak), Gaussian noise of ``sigma`` is added to one channel's latents at a time
and TAEF2's decoder's mean squared pixel change, over ``sigma^2``, is that channel's gain ``g_c``. Rate spent on a
channel buys down ``g_c x step_c^2 / 12``; at equal rate (a fixed product of steps) that sum is least with
``step_c`` proportional to ``g_c^(-1/2)`` (high-rate theory). Coarse steps are far from that regime, so the weights
use a smaller exponent, ``EXPONENT`` (chosen on the held-out photos: README, "Steps per channel"), normalized to a
geometric mean of 1. ``python -m latentcodec.training.step_weights`` prints the gains and the weights (a minute).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from PIL import Image

from latentcodec.engine.images import image_files
from latentcodec.engine.models import load_model
from latentcodec.training.decoder import SHARED

EXPONENT = 0.3
HOLDOUT = 4


def crops(limit: int | None, side: int = 256) -> torch.Tensor:
    """``[N, 3, side, side]`` centre crops of the training photos, in [0, 1]."""
    images = []
    for path in image_files(SHARED / "photos")[:-HOLDOUT][:limit]:
        image = Image.open(path).convert("RGB")
        left, top = (image.width - side) // 2, (image.height - side) // 2
        pixels = np.array(image.crop((left, top, left + side, top + side)))
        images.append(torch.from_numpy(pixels).permute(2, 0, 1).float() / 255)
    return torch.stack(images)


@torch.no_grad()
def channel_gains(images: torch.Tensor, sigma: float = 0.4, seed: int = 0) -> np.ndarray:
    """``g_c`` per latent channel: mean squared change of TAEF2's decode per unit noise variance in channel c."""
    model = load_model("taef2")
    latents = model.encode(images)
    clean = model.decode(latents)
    generator = torch.Generator().manual_seed(seed)
    gains = []
    for channel in range(latents.shape[1]):
        noisy = latents.clone()
        noisy[:, channel] += sigma * torch.randn(noisy[:, channel].shape, generator=generator)
        gains.append(float((model.decode(noisy) - clean).square().mean()) / sigma**2)
    return np.array(gains)


def weights(gains: np.ndarray, exponent: float = EXPONENT) -> np.ndarray:
    """Step weights ``(g_c / geomean g)^-exponent`` (geometric mean 1)."""
    return (gains / np.exp(np.log(gains).mean())) ** -exponent


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m latentcodec.training.step_weights", description=__doc__)
    parser.add_argument("--limit", type=int, default=None, help="photos to measure on (default: all but the held-out)")
    parser.add_argument("--exponent", type=float, default=EXPONENT)
    args = parser.parse_args(argv)
    gains = channel_gains(crops(args.limit))
    print("gains (relative to their mean):", ", ".join(f"{g:.2f}" for g in gains / gains.mean()))
    print("weights:", ", ".join(f"{w:.3f}" for w in weights(gains, args.exponent)))


if __name__ == "__main__":
    main()
