"""The learned upscalers of downscaled streams (taef2-q2's, taef2-q4's): bicubic plus a residual, trained on the
codec's decodes."""

import numpy as np
import torch
from shared_inputs import SHARED

import latentcodec
from latentcodec.bench.decoder_gain import as_model
from latentcodec.engine.images import psnr
from latentcodec.engine.models import load_model, registry
from latentcodec.engine.models.loaders import _metadata, _resizer
from latentcodec.engine.models.upscaler import RATE_LADDER, Upscaler, bicubic
from latentcodec.engine.models.weights import file_sha256


def _photo(box=(0, 0, 320, 240)):
    from PIL import Image

    return Image.open(SHARED / "data" / "photos" / "045.png").convert("RGB").crop(box)  # held out of training


def test_an_untrained_upscaler_is_bicubic_and_a_batch_is_its_rows():
    small = torch.rand(2, 3, 17, 23)
    assert torch.equal(Upscaler()(small, (48, 65)), bicubic(small, (48, 65)))
    trained = load_model("taef2-q2").upscaler
    base = bicubic(small, (40, 57))
    ratios = torch.tensor([2.0, 3.0])
    with torch.no_grad():
        together = trained.residual(base, ratios)
        alone = torch.cat([trained.residual(base[[i]], float(ratios[i])) for i in range(2)])
    assert torch.allclose(together, alone, atol=1e-6) and together.abs().max() > 1e-3


def test_the_bundled_upscaler_ships_in_the_package_and_is_pinned():
    assert file_sha256(registry.TAEF2Q2_UPSCALER) == registry.TAEF2Q2_UPSCALER_SHA256
    assert registry.TAEF2Q2_UPSCALER.stat().st_size < 1 << 20


def test_taef2_q4_offers_the_ladder_and_tells_its_upscaler_the_noise_level():
    assert file_sha256(registry.TAEF2Q4_UPSCALER) == registry.TAEF2Q4_UPSCALER_SHA256
    model, q3 = load_model("taef2-q4"), load_model("taef2-q3")
    assert model.rate_scales == RATE_LADDER and q3.rate_scales == (1.0, 0.71, 0.5, 0.35)
    assert model.upscaler.told_level and not q3.upscaler.told_level
    small = torch.rand(1, 3, 24, 32)
    quiet, noisy = (model.upscale(small, (96, 128), level) for level in (0.1, 0.6))
    assert (quiet - noisy).abs().max() > 1e-3  # the level changes the residual


def test_downscaled_streams_are_resized_by_the_learned_upscaler():
    photo = _photo()
    reference = np.asarray(photo)
    codec = latentcodec.Codec("taef2-q2", device="cpu")
    data = codec.encode(photo, step=0.7, scale=0.5, denoiser=None)
    header = latentcodec.info(data)
    assert (header.coded_width, header.coded_height) == (160, 120)
    learned = np.asarray(codec.decode(data))
    plain = latentcodec.Codec("taef2", device="cpu")
    resized = np.asarray(plain.decode(as_model(data, plain)))  # the same symbols, TAEF2 and bicubic
    assert learned.shape == resized.shape == reference.shape
    assert psnr(reference, learned) > psnr(reference, resized) + 0.1


def test_models_without_an_upscaler_resize_bicubic():
    model = load_model("taef2")
    small = torch.rand(1, 3, 12, 16)
    assert model.upscaler is None and torch.equal(model.upscale(small, (24, 33)), bicubic(small, (24, 33)))


def test_a_seconds_long_training_run(tmp_path):
    from latentcodec.training.upscaler import main

    output = tmp_path / "upscaler.safetensors"
    options = ["--limit", "2", "--steps", "3", "--batch", "2", "--crop", "128", "--max-side", "256"]
    main([str(output), *options, "--holdout", "1", "--folders", str(SHARED / "data" / "photos")])
    assert output.is_file() and output.with_suffix(".checkpoint.pt").is_file()
    built = _resizer(_metadata(output))  # what the engine builds from the file: the scales it learned, told the level
    assert built.scales == RATE_LADDER and built.told_level
    q2_like = tmp_path / "q2_like.safetensors"
    q2_options = ["--source-model", "taef2", "--no-channel-steps", "--no-told-level", "--scales", "0.71", "0.5"]
    main([str(q2_like), *options, *q2_options, "--folders", str(SHARED / "data" / "photos")])
    built = _resizer(_metadata(q2_like))
    assert built.scales == (1.0, 0.71, 0.5) and not built.told_level and built.body[0].in_channels == 13


def test_a_half_precision_upscale_that_overflows_runs_again_in_float32(monkeypatch):
    photo = _photo((0, 0, 128, 96))
    reference = latentcodec.Codec("taef2-q2", device="cpu")
    half = latentcodec.Codec("taef2-q2", device="cpu", dtype=torch.float16)
    stream = reference.encode(photo, step=0.7, scale=0.5, denoiser=None)
    broken = lambda rgb, size, level: torch.full((rgb.shape[0], 3, *size), torch.inf, dtype=rgb.dtype)  # noqa: E731
    monkeypatch.setattr(half.session.model, "upscale", broken)
    decoded = np.asarray(half.decode(stream))
    assert half.session.fallbacks == 1
    assert psnr(np.asarray(reference.decode(stream)), decoded) > 40  # the float32 rerun, not the broken pass
