"""Image quality metrics on uint8 RGB arrays."""

from __future__ import annotations

import numpy as np

from latentcodec.engine.images import mse, psnr  # the codec's own, so searches and benches score alike

__all__ = ["bits_per_pixel", "ms_ssim", "mse", "psnr", "ssim", "ssimulacra2"]


def bits_per_pixel(num_bytes: int, width: int, height: int) -> float:
    return 8.0 * num_bytes / (width * height)


def _as_batch(image: np.ndarray):
    import torch

    return torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).permute(2, 0, 1)[None]


def ssim(reference: np.ndarray, test: np.ndarray) -> float:
    """SSIM of uint8 RGB images (pytorch-msssim: 11x11 Gaussian window, sigma 1.5, mean over channels)."""
    from pytorch_msssim import ssim as _ssim

    if reference.shape != test.shape:
        raise ValueError(f"shape mismatch: {reference.shape} vs {test.shape}")
    return float(_ssim(_as_batch(reference), _as_batch(test), data_range=255, size_average=True))


def ms_ssim(reference: np.ndarray, test: np.ndarray) -> float:
    """MS-SSIM of uint8 RGB images (pytorch-msssim, 5 scales); sides must exceed 160 pixels."""
    from pytorch_msssim import ms_ssim as _ms_ssim

    if reference.shape != test.shape:
        raise ValueError(f"shape mismatch: {reference.shape} vs {test.shape}")
    if min(reference.shape[:2]) <= 160:
        raise ValueError(f"MS-SSIM needs sides over 160 pixels, got {reference.shape[1]}x{reference.shape[0]}")
    return float(_ms_ssim(_as_batch(reference), _as_batch(test), data_range=255, size_average=True))


def ssimulacra2(reference: np.ndarray, test: np.ndarray) -> float:
    """SSIMULACRA2 of uint8 RGB images (the ``ssimulacra2`` package, a port of libjxl's metric): 100 is
    identical, 90 visually lossless, 70 high quality, 50 medium, 30 low; negative for heavy artefacts."""
    import io

    from PIL import Image
    from ssimulacra2 import compute_ssimulacra2

    if reference.shape != test.shape:
        raise ValueError(f"shape mismatch: {reference.shape} vs {test.shape}")
    files = []
    for array in (reference, test):
        buffer = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG", compress_level=1)
        buffer.seek(0)
        files.append(buffer)
    return float(compute_ssimulacra2(*files))
