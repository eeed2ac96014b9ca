"""Shared fixtures. Triton runs in interpreter mode on the CPU; TAEF2 weights come from ../shared."""

import os
from pathlib import Path

os.environ.setdefault("TRITON_INTERPRET", "1")  # before anything imports triton

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LATENTCODEC_SHARED", REPO.parent / "shared"))
KODAK = SHARED / "data" / "kodak"
os.environ.setdefault("LATENTCODEC_WEIGHTS", str(SHARED / "models"))


def kodak_path(index: int) -> Path:
    return KODAK / f"kodim{index:02d}.png"


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


def as_array(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))
