"""Steps per latent channel (engine/coders/step_weights.py): the uniform coder's table of weights, named in the
stream, on by default in FLUX.2's space and nowhere else."""

import numpy as np
import pytest
import torch
from PIL import Image
from shared_inputs import kodak_path

import latentcodec
from latentcodec.engine import bitstream
from latentcodec.engine.coders import UniformCoder, step_weights
from latentcodec.engine.errors import CorruptStreamError


def _latents(channels: int = 32) -> torch.Tensor:
    return torch.randn(2, channels, 6, 5, generator=torch.Generator().manual_seed(0)) * 2


def test_each_channel_is_quantized_on_its_own_step_and_decoded_back():
    coder, latents = UniformCoder(), _latents()
    coded = coder.encode(latents, latentcodec.EncodeOptions(step=0.8))
    params = [bytes(row) for row in coded.params.numpy()]
    assert all(len(p) == 6 and p[4] == step_weights.table_for(32) != 0 for p in params)
    decoded = coder.decode(params, coded.planes[:, : coder.planes_size(params[0], (32, 6, 5))], (32, 6, 5))
    steps = 0.8 * torch.tensor(step_weights.TABLES[1])[None, :, None, None]
    assert torch.equal(decoded, (latents / steps).round() * steps)  # the same float32 products on both sides
    error = (decoded - latents).abs().amax(dim=(0, 2, 3))
    assert bool((error <= steps.flatten() / 2 + 1e-6).all()) and error[3] < error[0]  # channel 3 is finer


def test_one_step_for_all_writes_the_streams_of_before():
    coder, latents = UniformCoder(), _latents()
    coded = coder.encode(latents, latentcodec.EncodeOptions(step=0.8, channel_steps=False))
    params = [bytes(row) for row in coded.params.numpy()]
    assert {len(p) for p in params} == {5}
    planes = coded.planes[:, : coder.planes_size(params[0], (32, 6, 5))]
    assert torch.equal(coder.decode(params, planes, (32, 6, 5)), (latents / 0.8).round() * 0.8)
    other = coder.encode(_latents(4), latentcodec.EncodeOptions(step=0.8))  # no table for 4 channels
    assert other.params.shape[1] == 5


@pytest.mark.parametrize("table", [0, 2, 255])
def test_a_stream_naming_an_unknown_table_is_refused(table):
    params = np.float32(0.8).tobytes() + bytes([table, 1])
    with pytest.raises(CorruptStreamError):
        UniformCoder().planes_size(params, (32, 6, 5))


def test_a_table_for_other_channels_is_refused_on_decode():
    params = np.float32(0.8).tobytes() + bytes([1, 1])
    with pytest.raises(CorruptStreamError, match="does not fit"):
        UniformCoder().decode([params], torch.zeros(1, 4 * 30, dtype=torch.uint8), (4, 6, 5))


def test_the_codec_uses_the_table_where_it_was_measured_and_not_under_refinement():
    image = Image.open(kodak_path(23)).convert("RGB").crop((300, 200, 364, 264))
    codec = latentcodec.Codec("taef2", device="cpu")
    weighted_stream = codec.encode(image, step=1.25, denoiser=None)
    refined_stream = codec.encode(image, step=1.25, denoiser=None, effort=1)
    weighted, refined = (bitstream.unpack(data).params for data in (weighted_stream, refined_stream))
    assert (len(weighted), len(refined)) == (6, 5)
    described = latentcodec.info(weighted_stream), latentcodec.info(refined_stream)  # info() names step and table
    assert [(d.step, d.step_table) for d in described] == [(1.25, step_weights.table_for(32)), (1.25, 0)]
    assert latentcodec.info(codec.encode(image, mode="scalar8")).step is None
    stream = bitstream.unpack(weighted_stream)  # hostile parameters: info() reports no step, decode refuses them
    hostile = bitstream.pack(
        bitstream.Stream(stream.header, np.float32("nan").tobytes() + bytes([1, 1]), stream.latents)
    )
    assert latentcodec.info(hostile).step is None
    with pytest.raises(CorruptStreamError):
        codec.decode(hostile)
    latent = latentcodec.encode_latents(torch.randn(32, 4, 4), step=1.0)  # latent streams: one step (target_rmse)
    assert len(bitstream.unpack(latent).params) == 5


def test_the_measurement_script_runs_in_seconds(capsys):
    from latentcodec.training.step_weights import main

    main(["--limit", "2"])
    printed = capsys.readouterr().out
    weights = [float(w) for w in printed.split("weights:")[1].split(",")]
    assert len(weights) == 32 and abs(np.log(weights).mean()) < 1e-3
