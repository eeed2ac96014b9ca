"""``Coder.simulate``: the quantization the training scripts use is the coders' own, equal to a real stream's."""

from pathlib import Path

import numpy as np
import pytest
import torch

from latentcodec.engine import bitstream
from latentcodec.engine.coders import Layout, coder_for, registered_modes, simulate
from latentcodec.engine.format import CodingMode
from latentcodec.engine.options import EncodeOptions

# each registered mode at least once; the 0.02 step makes int16 symbols (symbol width 2)
POINTS = (
    {"mode": "uniform", "step": 2.0},
    {"mode": "uniform", "step": 0.02},
    {"mode": "palette", "palette_size": 16},
    {"mode": "palette", "palette_size": 8, "dither": False},
    {"mode": "scalar8"},
)


def test_every_mode_is_simulated():
    assert {CodingMode.parse(p["mode"]) for p in POINTS} == set(registered_modes())


@pytest.fixture(scope="module")
def conditioned_codec():
    from latentcodec import Codec

    return Codec("taef2-q2", device="cpu")  # its streams record the noise level the decoder is told


@pytest.mark.parametrize("point", POINTS, ids=lambda p: "-".join(str(v) for v in p.values()))
def test_simulate_is_what_a_stream_decodes_to(conditioned_codec, kodak_crop, point):
    codec = conditioned_codec
    stream = codec.encode(kodak_crop, denoiser=None, **point)
    rgb = torch.from_numpy(np.array(kodak_crop)).permute(2, 0, 1)[None]
    latents, noise = simulate(codec.latents_of(rgb), **point)
    if point["mode"] == "uniform":  # the stream's symbol width
        assert bitstream.unpack(stream).params[-1] == (2 if point["step"] < 0.1 else 1)
    assert torch.equal(latents[0], codec.decode_latents(stream))
    assert noise.dtype == torch.float32 and noise[0].item() == bitstream.unpack(stream).header.noise_level


@pytest.mark.parametrize("point", POINTS, ids=lambda p: "-".join(str(v) for v in p.values()))
def test_simulate_takes_batches_whose_rows_code_alone(point):
    latents = torch.randn(3, 32, 6, 5) * torch.tensor([1.0, 40.0, 0.3])[:, None, None, None]  # int8, int16, int8
    options = EncodeOptions(**point)
    together = coder_for(options.mode).simulate(latents, options)
    for row in range(3):
        alone = simulate(latents[row : row + 1], options)
        assert torch.equal(together.latents[row], alone.latents[0]) and together.noise[row] == alone.noise[0]
    assert together.latents.shape == latents.shape and together.noise.shape == (3,)


def test_simulate_records_float16_noise_and_takes_the_decoders_layout():
    latents = torch.randn(2, 32, 4, 4)
    options = EncodeOptions(mode="uniform", step=0.7)
    coded = coder_for(options.mode).encode(latents, options)
    out = coder_for(options.mode).simulate(latents, options, out=Layout(torch.float16, torch.channels_last))
    assert torch.equal(out.noise, coded.noise.half().float())
    assert out.latents.dtype == torch.float16 and out.latents.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(out.latents.float(), simulate(latents, options).latents.half().float())


@pytest.mark.parametrize("kind", ["uniform", "palette", "scalar8"])
def test_the_decoder_training_quantizes_windows_through_the_coders(kind, monkeypatch):
    from latentcodec.training import decoder

    calls = []

    def recorded(latents, **options):
        calls.append(options)
        return simulate(latents, **options)

    monkeypatch.setattr(decoder, "simulate", recorded)
    window = torch.randn(32, 20, 20) * 2
    quantized, sigma = decoder.quantize(window, kind, torch.Generator().manual_seed(0), decoder.TrainConfig(Path()))
    (options,) = calls
    assert options["mode"] == kind
    expected = simulate(window[None], **options)
    assert torch.equal(quantized, expected.latents[0]) and sigma == expected.noise[0]
