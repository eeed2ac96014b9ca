"""Tiled encode and decode: geometry, no seams, the same bitstream either way, and the fp16 fallback."""

import itertools

import numpy as np
import pytest
import torch
from PIL import Image
from shared_inputs import kodak_path

from latentcodec import Codec
from latentcodec.bench.tiles import border_ratio, seam_band
from latentcodec.engine.images import psnr
from latentcodec.engine.tiling import TilePolicy, Tiling, blend_weights

TILE = 256  # pixels: 32 TAEF2 cells, so a 768x512 Kodak image runs in 4 x 3 tiles


@pytest.mark.parametrize("length", [1, 31, 32, 33, 40, 96, 97, 250, 1001])
@pytest.mark.parametrize("scale", [1, 8])
def test_tiles_cover_the_grid_and_weights_sum_to_one(length, scale):
    tiling = Tiling(32, 8)
    spans = tiling.spans(length)
    assert spans[0][0] == 0 and spans[-1][1] == length
    assert all(end - start == min(32, length) for start, end in spans)
    assert all(a[1] - b[0] >= 8 for a, b in itertools.pairwise(spans))  # neighbours overlap enough
    total = torch.zeros(length * scale)
    for (start, end), weight in zip(spans, blend_weights(spans, scale), strict=True):
        assert weight.min() >= 0 and weight.max() <= 1
        total[start * scale : end * scale] += weight
    assert torch.allclose(total, torch.ones_like(total), atol=1e-6)


def test_policy_settings():
    cpu = torch.device("cpu")
    assert TilePolicy.of(0, cpu).for_grid(10_000, 10_000) is None
    assert TilePolicy.of(None, cpu).for_grid(96, 64) is None  # Kodak runs whole by default
    assert TilePolicy.of(None, cpu).for_grid(500, 750) is not None  # 24 Mpixel runs tiled
    assert TilePolicy.of(TILE, cpu).for_grid(96, 64) == Tiling(32, 8)
    with pytest.raises(ValueError):
        TilePolicy.of(100, cpu)


@pytest.fixture(scope="module")
def kodim() -> Image.Image:
    return Image.open(kodak_path(23)).convert("RGB")


@pytest.fixture(scope="module")
def codecs():
    return Codec("taef2", device="cpu", tile=0), Codec("taef2", device="cpu", tile=TILE)


@pytest.mark.slow
def test_tiled_decode_has_no_seams(codecs, kodim):
    whole, tiled = codecs
    assert tiled.session.tiles.for_grid(64, 96) is not None
    stream = whole.encode(kodim, mode="uniform", step=1)
    original = np.asarray(kodim)
    untiled, tiled_image = (np.asarray(codec.decode(stream)) for codec in codecs)
    assert abs(psnr(original, untiled) - psnr(original, tiled_image)) <= 0.1
    band = seam_band(original.shape[:2], Tiling(TILE // 8, 8))
    assert band.mean() > 0.1  # 3 + 2 borders, 16 pixels wide
    # tiles add no error along their borders
    assert border_ratio(original, tiled_image, band) <= border_ratio(original, untiled, band) * 1.02
    assert psnr(untiled, tiled_image) > 45  # and almost none anywhere


@pytest.mark.slow
def test_streams_decode_tiled_or_whole_and_tiled_encoding_matches(codecs, kodim):
    streams = [codec.encode(kodim, mode="uniform", step=1) for codec in codecs]
    assert streams[0][:16] == streams[1][:16]  # the same header: tiling is not in the format
    original = np.asarray(kodim)
    quality = [psnr(original, np.asarray(codec.decode(stream))) for stream in streams for codec in codecs]
    assert max(quality) - min(quality) <= 0.1


def test_half_precision_pass_with_non_finite_output_runs_again_in_float32(kodim, monkeypatch):
    crop = kodim.crop((0, 0, 64, 64))
    reference = Codec("taef2", device="cpu", tile=0)
    half = Codec("taef2", device="cpu", dtype=torch.float16, tile=0)
    stream = reference.encode(crop, mode="uniform", step=1)
    model = half.session.model
    broken = lambda z, *sigma: torch.full((z.shape[0], 3, z.shape[2] * 8, z.shape[3] * 8), torch.inf, dtype=z.dtype)  # noqa: E731
    monkeypatch.setattr(model, "decode", broken)
    decoded = np.asarray(half.decode(stream))
    assert half.session.fallbacks == 1
    assert psnr(np.asarray(reference.decode(stream)), decoded) > 40  # the float32 rerun, not the broken pass


def test_half_precision_tiled_pass_falls_back_per_tile(kodim, monkeypatch):
    crop = kodim.crop((0, 0, 512, 256))
    reference = Codec("taef2", device="cpu", tile=0)
    half = Codec("taef2", device="cpu", dtype=torch.float16, tile=TILE)
    stream = reference.encode(crop, mode="uniform", step=1)
    model, calls = half.session.model, []
    decode_local = model.decode_local

    def first_tile_broken(features, *sigma):
        calls.append(1)
        out = decode_local(features, *sigma)
        return out.fill_(torch.nan) if len(calls) == 1 else out

    monkeypatch.setattr(model, "decode_local", first_tile_broken)
    decoded = np.asarray(half.decode(stream))
    assert half.session.fallbacks == 1 and len(calls) == Tiling(32, 8).tiles(32, 64)
    assert psnr(np.asarray(reference.decode(stream)), decoded) > 40
