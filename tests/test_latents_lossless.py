"""Exact latent streams: integer latents back bit for bit in their dtype, float latents within step / 2."""

import numpy as np
import pytest
import torch

import latentcodec
from latentcodec.engine import latent_lossless
from latentcodec.engine.errors import CorruptStreamError, InvalidLatentsError
from latentcodec.engine.latent_lossless import is_lossless


def _gaussian(shape: tuple[int, ...], scale: float, seed: int = 0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale


@pytest.mark.parametrize("entropy", ["passes", "context"])
def test_uint8_latents_come_back_exact(entropy: str) -> None:
    codes = (_gaussian((32, 12, 16), 40) + 128).round().clamp(0, 255).to(torch.uint8)
    codes[0, 0, 0], codes[1, 0, 0] = 0, 255  # the extremes: escapes
    data = latentcodec.encode_latents_lossless(codes, entropy=entropy)
    back = latentcodec.decode_latents_lossless(data)
    assert is_lossless(data) and back.dtype == torch.uint8 and torch.equal(back, codes)


def test_int8_numpy_and_batch_of_one_come_back_exact() -> None:
    codes = _gaussian((1, 32, 8, 8), 30).round().clamp(-128, 127).numpy().astype(np.int8)
    back = latentcodec.decode_latents_lossless(latentcodec.encode_latents_lossless(codes))
    assert back.dtype == torch.int8 and torch.equal(back, torch.from_numpy(codes[0]))


@pytest.mark.parametrize("dtype", [torch.int16, torch.int32])
def test_wide_integers_come_back_exact(dtype: torch.dtype) -> None:
    codes = _gaussian((32, 4, 4), 3000).round().to(dtype)
    back = latentcodec.decode_latents_lossless(latentcodec.encode_latents_lossless(codes))
    assert back.dtype == dtype and torch.equal(back, codes)


def test_outliers_of_a_narrow_core_are_escapes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(latent_lossless, "_MAX_BITS", 0)  # k = 0 only: symbols are the values less the median
    codes = torch.full((32, 8, 8), 128, dtype=torch.uint8)
    codes[3, 2, 1], codes[5, 7, 7] = 0, 255  # beyond +-127 of the median at k = 0
    data = latentcodec.encode_latents_lossless(codes)
    assert data[5] == 0 and torch.equal(latentcodec.decode_latents_lossless(data), codes)  # k = 0, escapes


def test_constant_latents() -> None:
    codes = torch.full((32, 3, 5), 7, dtype=torch.uint8)
    assert torch.equal(latentcodec.decode_latents_lossless(latentcodec.encode_latents_lossless(codes)), codes)


def test_near_lossless_is_within_half_a_step() -> None:
    latents = _gaussian((32, 8, 8), 2).float()
    step = 0.01  # finer than the uniform mode's int8 symbols reach
    back = latentcodec.decode_latents_lossless(latentcodec.encode_latents_lossless(latents, step=step))
    assert back.dtype == torch.float32 and float((back - latents).abs().max()) <= step / 2 * (1 + 1e-5)


def test_smooth_uint8_latents_shrink() -> None:
    ramp = torch.linspace(0, 1, 32 * 16 * 16).reshape(32, 16, 16)
    codes = (ramp * 200 + 20).round().to(torch.uint8)
    assert len(latentcodec.encode_latents_lossless(codes)) < codes.numel() * 0.7


@pytest.mark.parametrize(
    "latents, error",
    [
        (torch.zeros(32, 4, 4), "float: step="),
        (torch.zeros(32, 4, dtype=torch.uint8), "one latent"),
        (torch.zeros(4, 4, 4, dtype=torch.uint8), "channels"),
        ([1, 2, 3], "torch tensor or a numpy array"),
    ],
)
def test_bad_inputs_are_refused(latents: object, error: str) -> None:
    with pytest.raises(InvalidLatentsError, match=error):
        latentcodec.encode_latents_lossless(latents)


def test_nan_and_bad_steps_are_refused() -> None:
    with pytest.raises(InvalidLatentsError, match="NaN"):
        latentcodec.encode_latents_lossless(torch.full((32, 2, 2), float("nan")), step=0.1)
    with pytest.raises(ValueError, match="step"):
        latentcodec.encode_latents_lossless(torch.zeros(32, 2, 2), step=0.0)


def test_corrupt_streams_are_refused() -> None:
    codes = (_gaussian((32, 4, 4), 60) + 128).round().clamp(0, 255).to(torch.uint8)
    data = latentcodec.encode_latents_lossless(codes)
    for bad in (b"", b"LCZI", data[:20], b"XXXX" + data[4:], data[:4] + b"\x09" + data[5:], data[:-3]):
        with pytest.raises(CorruptStreamError):
            latentcodec.decode_latents_lossless(bad)
