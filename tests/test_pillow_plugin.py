"""Image.open / Image.save on .lcz files once latentcodec is imported (what registers the plugin)."""

import numpy as np
import pytest
from PIL import Image, UnidentifiedImageError

import latentcodec  # registers the plugin: Pillow discovers none by itself


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


@pytest.mark.parametrize(("keep", "reason"), [(10, "shorter than its header"), (-10, "checksum mismatch")])
def test_a_truncated_stream_says_why_it_cannot_be_opened(tmp_path, kodak_crop, keep, reason):
    path = tmp_path / "x.lcz"
    path.write_bytes(latentcodec.encode(kodak_crop, model="taef2", mode="scalar8", entropy="zstd")[:keep])
    message = rf"cannot identify image file '.*x\.lcz' as a latentcodec stream: .*{reason}"
    with pytest.raises(UnidentifiedImageError, match=message):
        Image.open(path)


def test_unknown_save_keywords_are_refused_by_name(tmp_path, kodak_crop):
    path = tmp_path / "x.lcz"
    with pytest.raises(ValueError, match=r"option.* qualty, speed; known: model, mode, quality, step"):
        kodak_crop.save(path, qualty=80, speed=3)
    assert not path.exists()
