"""The image quality scores the encoder's searches maximise (``metric=``): higher is better for each."""

from __future__ import annotations

import numpy as np
import torch

from latentcodec.engine.images import psnr
from latentcodec.engine.options import METRICS

MS_SSIM_MIN_SIDE = 161  # MS-SSIM's five scales need sides over 160 pixels; smaller images are scored by SSIM


def _batch(pixels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32)).permute(2, 0, 1)[None]


def ms_ssim(reference: np.ndarray, test: np.ndarray) -> float:
    """MS-SSIM of uint8 RGB images (``pytorch-msssim``; SSIM for sides of 160 pixels or less)."""
    from pytorch_msssim import ms_ssim as multi_scale
    from pytorch_msssim import ssim as single_scale

    if reference.shape != test.shape:
        raise ValueError(f"shape mismatch: {reference.shape} vs {test.shape}")
    score = multi_scale if min(reference.shape[:2]) >= MS_SSIM_MIN_SIDE else single_scale
    with torch.no_grad():
        return float(score(_batch(reference), _batch(test), data_range=255, size_average=True))


def score(metric: str, reference: np.ndarray, test: np.ndarray) -> float:
    """``metric`` (one of :data:`METRICS`) of uint8 RGB ``test`` against ``reference``."""
    if metric == "psnr":
        return psnr(reference, test)
    if metric == "ms-ssim":
        return ms_ssim(reference, test)
    raise ValueError(f"unknown metric {metric!r}; choose {', '.join(METRICS)}")
