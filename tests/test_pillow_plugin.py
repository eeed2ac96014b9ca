"""Image.open / Image.save on .lcz files once latentcodec is imported."""

import numpy as np
import pytest
from PIL import Image

import latentcodec  # noqa: F401 - registers the plugin


def test_save_and_open(tmp_path, kodak_crop):
    path = tmp_path / "x.lcz"
    kodak_crop.save(path, mode="uniform", quality=80)
    with Image.open(path) as image:
        assert image.format == "LCZ" and image.size == kodak_crop.size and image.mode == "RGB"
        assert image.info["latentcodec"]["mode"] == "uniform"
        pixels = np.asarray(image)
    assert np.abs(pixels.astype(int) - np.asarray(kodak_crop)).mean() < 12


def test_open_corrupt_file_fails_cleanly(tmp_path):
    path = tmp_path / "bad.lcz"
    path.write_bytes(b"\x89LCZ\x01" + bytes(40))
    with pytest.raises((OSError, SyntaxError)):
        Image.open(path)
