"""Quantization as the codec does it, for training: latents through the coder of the options' mode and back."""

from __future__ import annotations

from typing import Any

import torch

from latentcodec.engine.coders.base import Simulated, coder_for
from latentcodec.engine.options import EncodeOptions


def simulate(
    latents: torch.Tensor, options: EncodeOptions | None = None, *, backend: str | None = None, **overrides: Any
) -> Simulated:
    """:meth:`Coder.simulate` of latents ``[B, C, H, W]`` (float, any device) under ``options`` with ``overrides``
    (``mode="uniform", step=2.0``; ``mode="palette", palette_size=32``; ``mode="scalar8"``), on their device."""
    resolved = EncodeOptions.resolve(options, overrides)
    return coder_for(resolved.mode, backend, latents.device).simulate(latents, resolved)
