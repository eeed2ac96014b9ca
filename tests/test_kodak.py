"""Acceptance: all 24 Kodak images round-trip in every mode at full size (about 4 minutes on 2 CPU cores)."""

import numpy as np
import pytest
from PIL import Image
from shared_inputs import KODAK

from latentcodec.bench.metrics import psnr
from latentcodec.bench.roundtrip import float_psnr
from latentcodec.engine.images import image_files

# Floors well below the measured Kodak means (scalar8 30.2, uniform q50 29.3, palette 21.5 dB): they catch breakage.
MODES = {"scalar8": 25.0, "uniform": 24.0, "palette": 17.0}


@pytest.fixture(scope="module")
def kodak():
    paths = image_files(KODAK)
    assert len(paths) == 24
    return [np.asarray(Image.open(p).convert("RGB")) for p in paths]


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_all_kodak_images_round_trip(codec, kodak, mode):
    streams = [r.unwrap() for r in codec.encode_batch(kodak, mode=mode)]
    decoded = [r.unwrap() for r in codec.decode_batch(streams)]
    scores = [psnr(ref, np.asarray(img)) for ref, img in zip(kodak, decoded, strict=True)]
    assert all(img.size == (ref.shape[1], ref.shape[0]) for ref, img in zip(kodak, decoded, strict=True))
    assert min(scores) > MODES[mode] - 4 and np.mean(scores) > MODES[mode]
    if mode == "scalar8":
        for ref, score in zip(kodak, scores, strict=True):
            assert score > float_psnr(codec, ref) - 0.3
