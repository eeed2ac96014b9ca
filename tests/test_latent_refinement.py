"""Encoder-side latent refinement: better pictures for the same step, streams that stay valid."""

import pytest
import torch
from shared_inputs import as_array

import latentcodec
from latentcodec.bench.metrics import psnr
from latentcodec.engine import latent_refinement, stream_edits


def test_refinement_lowers_the_loss_it_optimises():
    torch.manual_seed(0)
    decoder = torch.nn.Conv2d(2, 3, 1)  # a linear "decoder": the optimum is reachable
    target = torch.rand(1, 3, 4, 4)
    latents = torch.randn(1, 2, 4, 4)

    def loss(z):
        q = torch.round(z / 0.5) * 0.5
        with torch.no_grad():
            return torch.nn.functional.mse_loss(decoder(q), target).item()

    refined = latent_refinement.refine(lambda q, _noise: decoder(q), latents, target, step=0.5, steps=30)
    assert loss(refined) < loss(latents)


def test_refinement_gives_a_better_picture_at_the_same_step(codec, kodak_crop):
    crop_reference = as_array(kodak_crop)
    plain = codec.encode(kodak_crop, mode="uniform", step=2.0, channel_steps=False)  # refinement's grid: one step
    refined = codec.encode(kodak_crop, mode="uniform", step=2.0, effort=10)
    gain = psnr(crop_reference, as_array(codec.decode(refined))) - psnr(crop_reference, as_array(codec.decode(plain)))
    assert gain > 1.0
    assert len(refined) < 1.5 * len(plain)  # the rate term keeps the bytes in check
    assert latentcodec.info(refined).mode == "uniform"


def test_auto_refines_for_the_decoder_alone_and_then_chooses_the_strength(codec, kodak_crop):
    alone = codec.encode(kodak_crop, mode="uniform", step=2.0, effort=4, denoiser=None)
    auto = codec.encode(kodak_crop, mode="uniform", step=2.0, effort=4)
    assert (stream_edits.without_denoiser(auto) if latentcodec.info(auto).denoiser else auto) == alone
    named = codec.encode(kodak_crop, mode="uniform", step=2.0, effort=4, denoiser="latent-denoiser")
    assert stream_edits.without_denoiser(named) != alone  # a named denoiser is refined through


def test_effort_is_validated(codec, kodak_crop):
    for options in ({"effort": -1}, {"effort": 3, "mode": "palette"}, {"effort": 3, "target_bpp": 0.5}):
        with pytest.raises(ValueError):
            codec.encode(kodak_crop, **options)


def test_the_rate_weight_grows_with_the_step_and_holds_the_bytes_down(codec, kodak_crop, monkeypatch):
    assert latent_refinement.rate_weight(4.0) == 16 * latent_refinement.rate_weight(1.0)
    scaled = codec.encode(kodak_crop, mode="uniform", step=4.0, effort=10, denoiser=None)
    monkeypatch.setattr(latent_refinement, "rate_weight", lambda step: latent_refinement.RATE_WEIGHT)
    constant = codec.encode(kodak_crop, mode="uniform", step=4.0, effort=10, denoiser=None)
    assert len(scaled) < len(constant)
