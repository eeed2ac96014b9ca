"""Shared fixtures. Triton runs in interpreter mode without a GPU; TAEF2 weights come from ../shared; the project's
own networks (the latent denoiser, taef2-q's decoder) ship in the package."""

import os

import torch

if not torch.cuda.is_available():  # on a GPU, Triton (kernels, torch.compile's) runs compiled
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before anything imports triton

import pytest
from PIL import Image
from shared_inputs import SHARED, kodak_path

os.environ.setdefault("LATENTCODEC_WEIGHTS", str(SHARED / "models"))


@pytest.fixture(scope="session")
def kodak_crop() -> Image.Image:
    """A 72x40 crop of kodim23 (odd multiple of 8 wide, not a multiple of 16 high)."""
    return Image.open(kodak_path(23)).convert("RGB").crop((300, 200, 372, 240))


@pytest.fixture(scope="session")
def odd_crop() -> Image.Image:
    """A 37x21 crop of kodim05: sizes that need padding on both axes."""
    return Image.open(kodak_path(5)).convert("RGB").crop((100, 100, 137, 121))


@pytest.fixture(scope="session")
def codec():
    from latentcodec import Codec

    return Codec("taef2", device="cpu")
