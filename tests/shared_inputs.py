"""Where the tests' data lives (../shared beside the checkout) and small image helpers the test modules share.

The tests folder has no ``__init__.py`` (see README, "Layout"): pytest puts it on ``sys.path``, so test modules
import this one by its own name.
"""

import os
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LATENTCODEC_SHARED", REPO.parent / "shared"))
KODAK = SHARED / "data" / "kodak"


def kodak_path(index: int) -> Path:
    return KODAK / f"kodim{index:02d}.png"


def as_array(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


def train_tiny_denoiser(folder: Path, output: Path, steps: int) -> None:
    """Train a denoiser for ``steps`` steps on 160x144 crops of the first two training images."""
    from latentcodec.training.denoiser import main as train_main

    folder.mkdir()
    for path in sorted((SHARED / "data" / "train").iterdir())[:2]:
        Image.open(path).convert("RGB").crop((0, 0, 160, 144)).save(folder / f"{path.stem}.png")
    options = ["--steps", str(steps), "--batch", "4", "--crop", "16", "--image-crop", "8", "--image-batch", "2"]
    train_main([str(folder), str(output), *options, "--holdout", "1", "--max-palette", "8"])
