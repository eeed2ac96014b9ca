"""Metric functions against known values."""

import math

import numpy as np
import pytest

from latentcodec.bench.metrics import bits_per_pixel, ms_ssim, mse, psnr, ssim


def test_identical_images_have_infinite_psnr():
    image = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    assert mse(image, image) == 0 and math.isinf(psnr(image, image))


def test_known_mse_gives_known_psnr():
    a = np.zeros((4, 4, 3), np.uint8)
    b = np.full((4, 4, 3), 5, np.uint8)  # MSE 25
    assert mse(a, b) == 25
    assert math.isclose(psnr(a, b), 10 * math.log10(255**2 / 25))
    assert math.isclose(bits_per_pixel(100, 10, 10), 8.0)


def _textured(seed: int, shape=(192, 176, 3)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(128, 40, shape), 0, 255).astype(np.uint8)


def test_ssim_and_ms_ssim_of_identical_images_are_one():
    image = _textured(1)
    assert math.isclose(ssim(image, image), 1.0, abs_tol=1e-6)
    assert math.isclose(ms_ssim(image, image), 1.0, abs_tol=1e-6)


def test_ssim_falls_as_noise_grows():
    image = _textured(2)
    rng = np.random.default_rng(3)
    noisy = [np.clip(image + rng.normal(0, s, image.shape), 0, 255).astype(np.uint8) for s in (2, 8, 32)]
    scores = [ssim(image, n) for n in noisy]
    assert scores == sorted(scores, reverse=True) and scores[-1] < 0.9
    ms_scores = [ms_ssim(image, n) for n in noisy]
    assert ms_scores == sorted(ms_scores, reverse=True)


def test_ssim_of_a_constant_shift_matches_the_luminance_term():
    """A flat image against a flat image brighter by d: SSIM is exactly the luminance term (2ab + c1)/(a²+b²+c1)."""
    a, d = 100.0, 20.0
    flat = np.full((64, 64, 3), a, np.uint8)
    shifted = np.full((64, 64, 3), a + d, np.uint8)
    c1 = (0.01 * 255) ** 2
    expected = (2 * a * (a + d) + c1) / (a * a + (a + d) ** 2 + c1)
    assert math.isclose(ssim(flat, shifted), expected, rel_tol=1e-4)


def test_ms_ssim_refuses_small_images():
    with pytest.raises(ValueError, match="160"):
        ms_ssim(np.zeros((100, 200, 3), np.uint8), np.zeros((100, 200, 3), np.uint8))


def test_ssimulacra2_is_100_for_identical_images_and_falls_with_distortion(kodak_crop):
    import io

    from PIL import Image

    from latentcodec.bench.metrics import ssimulacra2

    reference = np.asarray(kodak_crop)
    assert ssimulacra2(reference, reference) == pytest.approx(100)
    scores = []
    for quality in (90, 50, 10):
        buffer = io.BytesIO()
        kodak_crop.save(buffer, format="JPEG", quality=quality)
        scores.append(ssimulacra2(reference, np.asarray(Image.open(buffer).convert("RGB"))))
    assert scores == sorted(scores, reverse=True) and scores[0] < 100
