"""The sd-unet denoiser path with a tiny random Stable Diffusion config (U-Net, DDIM, CLIP text encoder)."""

import json

import numpy as np
import pytest
import torch
from test_models import _save_tiny_kl

from latentcodec import Codec, info
from latentcodec.engine.denoise import sd_unet
from latentcodec.engine.denoise.sd_unet import START_GRID, load_sd_unet
from latentcodec.engine.errors import ModelError


def _save_tiny_pipeline(folder):
    """unet/, scheduler/, text_encoder/ and tokenizer/ as in a Stable Diffusion pipeline folder."""
    from diffusers import DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    UNet2DConditionModel(
        in_channels=4,
        out_channels=4,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16,
        attention_head_dim=4,
        norm_num_groups=8,
    ).save_pretrained(folder / "unet")
    DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False, steps_offset=1
    ).save_pretrained(folder / "scheduler")
    config = CLIPTextConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=16,
    )
    CLIPTextModel(config).save_pretrained(folder / "text_encoder")
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, **{f"{c}</w>": i + 2 for i, c in enumerate("abcdefgh")}}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=16)
    tokenizer.save_pretrained(folder / "tokenizer")


@pytest.fixture(scope="module")
def sd_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("sd")
    _save_tiny_pipeline(root / "pipeline")
    _save_tiny_kl(root / "vae", scaling_factor=20.0)  # latents of about unit scale, as SD's are
    return root


def test_start_timestep_follows_the_noise_level(sd_folders):
    denoiser = load_sd_unet(sd_folders / "pipeline", steps=3)
    starts = [denoiser.start_timestep(sigma) for sigma in (0.0, 0.05, 0.2, 0.5, 1.0, 3.0)]
    assert starts == sorted(starts) and starts[0] == START_GRID and starts[-1] > starts[2]
    assert all(s % START_GRID == 0 for s in starts)
    alphas = denoiser.scheduler.alphas_cumprod
    start = denoiser.start_timestep(0.5)  # the matched timestep's noise-to-signal ratio is about 0.5
    assert abs(((1 - alphas[start]) / alphas[start]).sqrt().item() - 0.5) < 0.15
    for start in starts:
        steps = denoiser.timesteps(start)
        assert 1 <= len(steps) <= 3 and steps == sorted(steps, reverse=True)
        assert steps[0] <= start + denoiser.scheduler.config.steps_offset


def test_empty_prompt_embedding_is_computed_once(sd_folders):
    sd_unet.empty_prompt_embedding.cache_clear()
    first = load_sd_unet(sd_folders / "pipeline")
    second = load_sd_unet(sd_folders / "pipeline")
    assert sd_unet.empty_prompt_embedding.cache_info().misses == 1
    assert first.prompt_embeds.shape == (1, 16, 16)
    assert torch.equal(first.prompt_embeds, second.prompt_embeds)


def test_sd_unet_runs_end_to_end_and_batches(sd_folders, kodak_crop, monkeypatch):
    monkeypatch.setenv("LATENTCODEC_SD_VAE", str(sd_folders / "vae"))
    codec = Codec("sd-vae", device="cpu", denoiser_source=str(sd_folders / "pipeline"))
    images = [kodak_crop, kodak_crop.rotate(180), kodak_crop.transpose(0)]
    steps = (0.1, 1.5, 1.5)  # two noise levels: two schedule keys in one decode batch
    streams = [codec.encode(img, step=s, denoiser="sd-unet") for img, s in zip(images, steps, strict=True)]
    details = [info(data) for data in streams]
    assert all(d.denoiser == "sd-unet" and d.version == 2 for d in details)
    assert details[1].noise_level > details[0].noise_level > 0
    plain = [codec.decode(data, denoise=False) for data in streams]
    one_by_one = [codec.decode(data) for data in streams]
    batched = [r.unwrap() for r in codec.decode_batch(streams)]
    pixels = lambda image: np.asarray(image)  # noqa: E731
    for image, alone, together, undenoised in zip(images, one_by_one, batched, plain, strict=True):
        assert together.size == alone.size == undenoised.size == image.size
        assert np.array_equal(pixels(together), pixels(alone))
    assert any(not np.array_equal(pixels(a), pixels(b)) for a, b in zip(one_by_one, plain, strict=True))
    keys = {codec.denoiser("sd-unet").schedule_key(d.noise_level, 1) for d in details}
    denoised = {key for key in codec.session._passes if key[0] == "denoised"}
    assert len(keys) == 2 and denoised == {("denoised", "sd-unet", key) for key in keys}


def test_sd_unet_needs_a_matching_latent_space(kodak_crop, codec):
    with pytest.raises(ValueError, match="latent space"):
        codec.encode(kodak_crop, denoiser="sd-unet")


def test_missing_sd_unet_source_is_a_model_error(tmp_path):
    with pytest.raises(ModelError, match="sd-unet"):
        load_sd_unet(tmp_path / "missing")


def test_a_missing_sd_unet_says_how_to_name_its_source(tmp_path):
    from latentcodec.engine.denoise.sd_unet import load_sd_unet
    from latentcodec.engine.errors import WeightsNotFoundError

    with pytest.raises(WeightsNotFoundError, match=r"denoiser_source=.*\$LATENTCODEC_SD_UNET"):
        load_sd_unet(tmp_path / "missing")
