"""Metric functions against known values."""

import math

import numpy as np

from latentcodec.bench.metrics import bits_per_pixel, mse, psnr


def test_identical_images_have_infinite_psnr():
    image = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    assert mse(image, image) == 0 and math.isinf(psnr(image, image))


def test_known_mse_gives_known_psnr():
    a = np.zeros((4, 4, 3), np.uint8)
    b = np.full((4, 4, 3), 5, np.uint8)  # MSE 25
    assert mse(a, b) == 25
    assert math.isclose(psnr(a, b), 10 * math.log10(255**2 / 25))
    assert math.isclose(bits_per_pixel(100, 10, 10), 8.0)
