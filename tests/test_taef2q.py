"""The taef2-q model: TAEF2's encoder with a decoder fine-tuned for quantized latents, told their noise level."""

import numpy as np
import pytest
import torch

import latentcodec
from latentcodec.engine.images import psnr
from latentcodec.engine.models import load_model, registry
from latentcodec.engine.models.conditioned_decoder import ConditionedTinyDecoder
from latentcodec.engine.models.weights import file_sha256
from tests.conftest import SHARED, kodak_path


def test_the_conditioned_decoder_starts_as_the_decoder_it_was_made_from():
    base = load_model("taef2")
    model = ConditionedTinyDecoder(32)
    model.decoder.load_state_dict(base.decoder.state_dict())
    latents = torch.randn(2, 32, 6, 5)
    with torch.no_grad():
        assert torch.equal(model(latents, torch.tensor([0.1, 2.0])), base.decoder(latents))


def test_the_bundled_decoder_ships_in_the_package_and_is_pinned():
    assert registry.TAEF2Q_DECODER.is_file()
    assert file_sha256(registry.TAEF2Q_DECODER) == registry.TAEF2Q_DECODER_SHA256
    assert registry.TAEF2Q_DECODER.stat().st_size < 5 << 20


def test_taef2q_streams_record_the_noise_level_their_decoder_is_told(kodak_crop):
    codec = latentcodec.Codec("taef2-q", device="cpu")
    data = codec.encode(kodak_crop, step=2.0, denoiser=None)
    details = latentcodec.info(data)
    assert details.model == "taef2-q" and details.version == 4 and details.decoder_noise_level > 0.1
    assert latentcodec.info(codec.encode(kodak_crop, step=2.0, denoiser=None, entropy="zstd")).version == 3
    latents = codec.encode_latents(torch.from_numpy(np.asarray(kodak_crop)).permute(2, 0, 1)[None].float() / 255)
    measured = ((latents / 2).round() * 2 - latents).square().mean().sqrt().item()
    assert details.decoder_noise_level == pytest.approx(measured, rel=2e-3)  # float16 in the header
    decoded = codec.decode(data)
    assert decoded.size == kodak_crop.size
    with pytest.raises(latentcodec.ModelMismatchError):
        latentcodec.Codec("taef2", device="cpu").decode(data)


def test_old_taef2_streams_keep_their_decoder(kodak_crop):
    old = latentcodec.Codec("taef2", device="cpu")
    data = old.encode(kodak_crop, step=1.0, denoiser=None, entropy="zstd")
    assert latentcodec.info(data).version == 1
    assert np.array_equal(np.asarray(latentcodec.decode(data)), np.asarray(old.decode(data)))


@pytest.mark.slow
def test_the_trained_decoder_beats_the_original_at_coarse_steps():
    """Kodak is the benchmark, not training data: a crop of kodim05 at step 2, full resolution."""
    from PIL import Image

    image = Image.open(kodak_path(5)).convert("RGB").crop((0, 0, 256, 256))
    reference = np.asarray(image)
    scores = {}
    for model in ("taef2", "taef2-q"):
        codec = latentcodec.Codec(model, device="cpu")
        scores[model] = psnr(reference, np.asarray(codec.decode(codec.encode(image, step=2.0, denoiser=None))))
    assert scores["taef2-q"] > scores["taef2"] + 0.5, scores


def test_a_seconds_long_training_run(tmp_path):
    from latentcodec.training.decoder import main

    output = tmp_path / "decoder.safetensors"
    options = ["--limit", "2", "--steps", "2", "--batch", "2", "--crop", "16", "--window", "20", "--max-side", "256"]
    main([str(output), *options, "--holdout", "1", "--folders", str(SHARED / "data" / "photos")])
    assert output.is_file() and output.with_suffix(".checkpoint.pt").is_file()


def test_the_decoder_gain_bench_decodes_the_same_symbols_with_both_decoders(tmp_path):
    from PIL import Image

    from latentcodec.bench import decoder_gain

    path = tmp_path / "crop.png"
    Image.open(kodak_path(14)).convert("RGB").crop((0, 0, 192, 176)).save(path)
    records = decoder_gain.run([path], points=[("step 2 @ 1", {"step": 2.0})])
    assert [r.model for r in records] == ["taef2", "taef2-q"]
    assert round(abs(records[0].bpp - records[1].bpp) * 192 * 176 / 8) == 4  # "-q" and the noise level
    assert all(-200 < r.ssimulacra2 <= 100 and 0 < r.ms_ssim <= 1 for r in records)
    rows = decoder_gain.summarize(records)
    assert "step 2 @ 1" in decoder_gain.format_table(rows)
