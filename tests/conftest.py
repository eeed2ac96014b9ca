"""Shared fixtures. Triton runs in interpreter mode on the CPU; TAEF2 weights come from ../shared, and so does
the trained latent denoiser where ../shared holds it (otherwise a few-step stand-in is trained here)."""

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


@pytest.fixture(scope="session", autouse=True)
def latent_denoiser_weights(tmp_path_factory):
    """The trained latent denoiser from $LATENTCODEC_WEIGHTS when it is installed. Otherwise (CI: the weights
    are not committed) a 4-step stand-in from the training script, in a cache folder, with the registry pinned
    to its sha256 for the session: the tests check the engine's handling of a denoiser, not its gain."""
    from dataclasses import replace

    from latentcodec.engine.denoise import registry
    from latentcodec.engine.errors import WeightsNotFoundError
    from latentcodec.engine.models.weights import CACHE_ENV, file_sha256, resolve

    try:
        resolve(registry.LATENT_DENOISER_TAEF2)
        yield
        return
    except WeightsNotFoundError:
        pass
    cache = tmp_path_factory.mktemp("cache")
    output = cache / registry.LATENT_DENOISER_TAEF2.model_id / registry.LATENT_DENOISER_TAEF2.filename
    train_tiny_denoiser(tmp_path_factory.mktemp("stand-in") / "train", output, steps=4)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CACHE_ENV, str(cache))
        patch.setattr(
            registry, "LATENT_DENOISER_TAEF2", replace(registry.LATENT_DENOISER_TAEF2, sha256=file_sha256(output))
        )
        yield


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
