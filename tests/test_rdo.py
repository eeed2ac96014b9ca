"""Rate-distortion optimized rounding (``rdo``): floor or ceiling of each value, fewer bits for a little error."""

import numpy as np
import pytest
import torch

from latentcodec.engine.coders import coder_for
from latentcodec.engine.entropy import latent_stage, passes_coder, rdo
from latentcodec.engine.format import CodingMode, EntropyMethod
from latentcodec.engine.options import EncodeOptions


@pytest.fixture(scope="module")
def model():
    return latent_stage.model_for(EntropyMethod.PASSES, "flux2")


def scaled_latents(seed: int, shape=(2, 32, 12, 14), spread: float = 3.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    smooth = torch.nn.functional.avg_pool2d(torch.randn(shape, generator=generator), 3, 1, 1)
    return (smooth * 3 + torch.randn(shape, generator=generator) * 0.3) * spread / 3


def test_without_weight_it_rounds_to_nearest_and_with_it_trades_error_for_bits(model):
    x = scaled_latents(0)
    nearest = x.round().to(torch.int8)
    assert torch.equal(rdo.rounded(x, model, 0.0), nearest)
    chosen = rdo.rounded(x, model, 0.2)
    assert ((chosen == x.floor()) | (chosen == x.ceil())).all()
    bits = [sum(passes_coder.code_length(g.numpy(), model) for g in q) for q in (nearest, chosen)]
    errors = [(q.float() - x).square().mean().item() for q in (nearest, chosen)]
    assert bits[1] < 0.95 * bits[0] and errors[1] > errors[0]


def test_recoding_keeps_wide_rows_and_measures_the_new_noise(model):
    latents = scaled_latents(1) * 0.5
    latents[1, 0, 0, 0] = 400.0  # this row needs int16 symbols
    coder, options = coder_for(CodingMode.UNIFORM), EncodeOptions(step=0.5)
    coded = coder.encode(latents, options)
    steps = coder.encode_steps(options, *latents.shape[:2])  # steps per channel
    step = steps[0][:, None, None]
    recoded = rdo.recoded(coded, latents, steps, model, 0.2)
    size = latents[0].numel()
    assert torch.equal(recoded.planes[1], coded.planes[1]) and recoded.noise[1] == coded.noise[1]
    symbols = recoded.planes[0, :size].view(torch.int8).reshape(latents.shape[1:]).float()
    assert not torch.equal(recoded.planes[0], coded.planes[0])
    assert recoded.noise[0] == pytest.approx((symbols * step - latents[0]).square().mean().sqrt().item(), rel=1e-5)


def test_an_rdo_stream_is_smaller_and_decodes_near_the_nearest_one(codec, kodak_crop):
    nearest = codec.encode(kodak_crop, step=0.5, denoiser=None)
    weighed = codec.encode(kodak_crop, step=0.5, denoiser=None, rdo=0.25)
    assert len(weighed) < len(nearest)
    a, b = (np.asarray(codec.decode(s), dtype=np.float64) for s in (nearest, weighed))
    assert np.abs(a - b).mean() < 4.0
