"""Model registry: TAEF2 weights lookup and the diffusers loaders, with small random configs."""

import hashlib

import pytest
import torch

import latentcodec
from latentcodec import Codec
from latentcodec.engine.errors import UnknownModelError, WeightsMismatchError, WeightsNotFoundError
from latentcodec.engine.models import available_models, get_spec, load_model, registry, weights


def test_registry_lists_models():
    assert {"taef2", "sd-vae", "taesd"} <= set(available_models())
    spec = get_spec("taef2")
    assert (spec.latent_channels, spec.downsample) == (32, 8)
    with pytest.raises(UnknownModelError, match="unknown model 'nope'"):
        get_spec("nope")


def test_taef2_weights_are_verified(monkeypatch, tmp_path):
    for part in registry.TAEF2_FILES.values():
        path = weights.resolve(part)
        assert hashlib.sha256(path.read_bytes()).hexdigest() == part.sha256
    monkeypatch.setenv(weights.WEIGHTS_ENV, str(tmp_path))
    monkeypatch.setenv(weights.CACHE_ENV, str(tmp_path / "cache"))
    with pytest.raises(WeightsNotFoundError, match="LATENTCODEC_WEIGHTS"):
        weights.resolve(registry.TAEF2_FILES["encoder"])
    (tmp_path / "taef2").mkdir()
    (tmp_path / "taef2" / "encoder.pth").write_bytes(b"tampered")
    with pytest.raises(WeightsMismatchError):
        weights.resolve(registry.TAEF2_FILES["encoder"])


def test_taef2_model_fingerprint_is_stable():
    model = load_model("taef2")
    assert model is load_model("taef2")  # cached
    assert len(model.fingerprint) == 8
    latents = model.encode(torch.rand(1, 3, 16, 24))
    assert latents.shape == (1, 32, 2, 3)


def _save_tiny_kl(folder, scaling_factor=0.18215):
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        layers_per_block=1,
        norm_num_groups=4,
        scaling_factor=scaling_factor,
    )
    vae.save_pretrained(folder)


def _save_tiny_taesd(folder):
    from diffusers import AutoencoderTiny

    torch.manual_seed(0)
    vae = AutoencoderTiny(
        encoder_block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        num_encoder_blocks=(1, 1, 1, 1),
        num_decoder_blocks=(1, 1, 1, 1),
        latent_channels=4,
    )
    vae.save_pretrained(folder)


@pytest.mark.parametrize(("model_id", "save", "factor"), [("sd-vae", _save_tiny_kl, 2), ("taesd", _save_tiny_taesd, 8)])
def test_diffusers_models_load_with_from_pretrained(tmp_path, kodak_crop, model_id, save, factor):
    save(tmp_path / model_id)
    codec = Codec(model_id, device="cpu", source=str(tmp_path / model_id))
    assert codec.model.spec.downsample == factor
    assert codec.model.spec.latent_channels == 4
    data = codec.encode(kodak_crop, mode="scalar8")
    info = latentcodec.info(data)
    assert info.model == model_id and info.fingerprint == codec.model.fingerprint.hex()
    decoded = codec.decode(data)
    assert decoded.size == kodak_crop.size
    other = Codec("taef2", device="cpu")
    with pytest.raises(latentcodec.ModelMismatchError):
        other.decode(data)


def test_missing_diffusers_source_is_a_model_error(tmp_path):
    with pytest.raises(latentcodec.ModelError, match="cannot load 'sd-vae'"):
        load_model("sd-vae", source=str(tmp_path / "missing"))
