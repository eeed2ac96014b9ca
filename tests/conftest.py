"""Shared fixtures. Triton runs in interpreter mode on the CPU; TAEF2 weights come from ../shared; the project's
own networks (the latent denoiser, taef2-q's decoder) ship in the package."""

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


def train_tiny_denoiser(folder: Path, output: Path, steps: int) -> None:
    """Train a denoiser for ``steps`` steps on 160x144 crops of the first two training images."""
    from latentcodec.training.denoiser import main as train_main

    folder.mkdir()
    for path in sorted((SHARED / "data" / "train").iterdir())[:2]:
        Image.open(path).convert("RGB").crop((0, 0, 160, 144)).save(folder / f"{path.stem}.png")
    options = ["--steps", str(steps), "--batch", "4", "--crop", "16", "--image-crop", "8", "--image-batch", "2"]
    train_main([str(folder), str(output), *options, "--holdout", "1", "--max-palette", "8"])


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
