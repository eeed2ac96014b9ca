"""``flux2-vae``: the FLUX.2 VAE through diffusers, with the release's config at small random weights, sharing the
``flux2`` latent space with TAEF2 (its raw latents, before the pipelines' patchify and batch norm)."""

import inspect
import json
import shutil

import huggingface_hub
import numpy as np
import pytest
import torch

import latentcodec
from latentcodec import Codec
from latentcodec.engine.errors import ModelError, ModelMismatchError, WeightsNotFoundError
from latentcodec.engine.models import get_spec, load_model, registry
from latentcodec.engine.models.flux2_latents import PipelineStats, from_pipeline, to_pipeline, unpack
from latentcodec.engine.models.flux2_vae import FLUX2_VAE_SOURCE, pipeline_stats, subfolders

diffusers = pytest.importorskip("diffusers")

# vae/config.json of the FLUX.2 release (FLUX.2-dev, FLUX.2-klein): diffusers' AutoencoderKLFlux2 defaults
FLUX2_VAE_CONFIG = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2,
    "act_fn": "silu",
    "latent_channels": 32,
    "norm_num_groups": 32,
    "sample_size": 1024,
    "use_quant_conv": True,
    "use_post_quant_conv": True,
    "mid_block_add_attention": True,
    "batch_norm_eps": 1e-4,
    "batch_norm_momentum": 0.1,
    "patch_size": (2, 2),
}
SMALL = {"block_out_channels": (8, 8, 16, 16), "layers_per_block": 1, "norm_num_groups": 4}  # 4 blocks: still /8


def _vae(**changes):
    torch.manual_seed(0)
    vae = diffusers.AutoencoderKLFlux2(**{**FLUX2_VAE_CONFIG, **SMALL, **changes})
    n = vae.bn.num_features  # the pipelines' statistics, saved with the weights
    vae.bn.running_mean.copy_(torch.randn(n) * 0.3)
    vae.bn.running_var.copy_(torch.rand(n) + 0.5)
    return vae.eval()


@pytest.fixture(scope="module")
def pipeline_folder(tmp_path_factory):
    """A FLUX.2 pipeline's folder as the hub has it: ``model_index.json`` and the VAE in ``vae/``."""
    folder = tmp_path_factory.mktemp("flux2")
    _vae().save_pretrained(folder / "vae")
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "Flux2Pipeline", "vae": ["diffusers", "x"]}))
    return folder


@pytest.fixture(scope="module")
def flux2(pipeline_folder):
    return Codec("flux2-vae", device="cpu", source=str(pipeline_folder))


@pytest.fixture(scope="module")
def taef2():
    return Codec("taef2", device="cpu")


def _images(crop):
    return torch.from_numpy(np.asarray(crop, dtype=np.float32) / 255).permute(2, 0, 1).unsqueeze(0)


def test_the_config_is_the_flux2_release():
    defaults = inspect.signature(diffusers.AutoencoderKLFlux2.__init__).parameters
    assert {key: defaults[key].default for key in FLUX2_VAE_CONFIG} == FLUX2_VAE_CONFIG
    spec = get_spec("flux2-vae")
    assert (spec.latent_channels, spec.downsample, spec.latent_space) == (32, 8, "flux2")
    assert (spec.scaling_factor, spec.shift_factor, spec.image_range) == (1.0, 0.0, (-1.0, 1.0))


def test_loads_from_a_pipeline_folder_or_its_vae_folder(pipeline_folder, kodak_crop):
    model = load_model("flux2-vae", source=str(pipeline_folder))
    assert load_model("flux2-vae", source=str(pipeline_folder / "vae")).fingerprint == model.fingerprint
    vae = diffusers.AutoencoderKLFlux2.from_pretrained(pipeline_folder, subfolder="vae").eval()
    images = _images(kodak_crop).repeat(2, 1, 1, 1)  # 72x40: a 9x5 latent grid
    with torch.no_grad():
        latents = model.encode(images)
        assert latents.shape == (2, 32, 5, 9)
        assert torch.allclose(latents, vae.encode(images * 2 - 1).latent_dist.mode(), atol=1e-6)  # raw: no scaling
        decoded = model.decode(latents)
        assert decoded.shape == images.shape
        assert torch.allclose(decoded, (vae.decode(latents).sample + 1) / 2, atol=1e-6)


def test_image_streams_round_trip_and_name_the_model(flux2, taef2, kodak_crop):
    data = flux2.encode(kodak_crop, mode="scalar8")
    info = latentcodec.info(data)
    assert info.model == "flux2-vae" and info.fingerprint == flux2.model.fingerprint.hex()
    assert flux2.decode(data).size == kodak_crop.size
    with pytest.raises(ModelMismatchError):
        taef2.decode(data)  # an image stream decodes with the weights that made it only


def test_a_taef2_latent_stream_decodes_with_flux2_vae_and_back(flux2, taef2, kodak_crop, pipeline_folder, monkeypatch):
    latents = taef2.latents_of(_images(kodak_crop))[0]
    data = taef2.encode_latents(latents, step=0.1)
    coded = taef2.decode_latents(data)
    assert torch.equal(flux2.decode_latents(data), coded)  # the space's latents, whoever reads them
    rendered = flux2.decode_tensors([data])[0]
    assert rendered.shape == (3, 40, 72)
    assert torch.allclose(rendered, flux2.images_of(coded[None])[0].clamp(0, 1), atol=1e-5)  # as they are
    monkeypatch.setenv("LATENTCODEC_FLUX2_VAE", str(pipeline_folder))  # where a codec without source= looks
    assert Codec("flux2-vae", device="cpu").decode(data).size == kodak_crop.size

    back = flux2.encode_latents(flux2.latents_of(_images(kodak_crop))[0], step=0.1)
    assert (latentcodec.info(back).model, latentcodec.info(back).latent_space) == ("", "flux2")  # not the weights
    assert taef2.decode(back).size == kodak_crop.size
    assert Codec("taef2-q2", device="cpu").decode(back).size == kodak_crop.size


@pytest.fixture
def default_source(tmp_path, monkeypatch):
    """No source named, downloads off, an empty Hugging Face cache (``tmp_path / "hub"``); what loads from the
    default source is forgotten before and after (the registry keeps a failure for the process)."""
    for name in ("LATENTCODEC_FLUX2_VAE", "LATENTCODEC_DOWNLOAD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))  # read at its import
    registry.MODELS.forget("flux2-vae")
    yield tmp_path / "hub"
    registry.MODELS.forget("flux2-vae")


def test_the_default_hub_id_loads_from_the_hugging_face_cache(default_source, pipeline_folder, kodak_crop):
    assert subfolders(FLUX2_VAE_SOURCE) == ["vae", None]  # a pipeline repository's vae/, else a VAE's repository
    repo = default_source / f"models--{FLUX2_VAE_SOURCE.replace('/', '--')}"
    snapshot = repo / "snapshots" / ("0" * 40)
    shutil.copytree(pipeline_folder, snapshot)  # what from_pretrained(FLUX2_VAE_SOURCE, subfolder="vae") fetched
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    model = load_model("flux2-vae")
    assert model.fingerprint == load_model("flux2-vae", source=str(pipeline_folder)).fingerprint


def test_missing_weights_say_how_to_point_at_them(default_source, tmp_path):
    stream = latentcodec.encode_latents(torch.zeros(32, 2, 3), step=0.5)
    with pytest.raises(WeightsNotFoundError) as error:
        Codec("flux2-vae", device="cpu").decode(stream)
    message = str(error.value)
    assert f"model 'flux2-vae' is not on this machine ({FLUX2_VAE_SOURCE})" in message
    for way in ("Codec(source=...)", "latentcodec --source", "$LATENTCODEC_FLUX2_VAE", "LATENTCODEC_DOWNLOAD=1"):
        assert way in message
    with pytest.raises(ModelError, match=r"cannot load .flux2-vae. from .*missing: "):
        load_model("flux2-vae", source=str(tmp_path / "missing"))  # a named source that is not there


def test_another_autoencoder_is_refused(tmp_path):
    _vae(latent_channels=16).save_pretrained(tmp_path / "vae16")
    with pytest.raises(ModelError, match=r"is not a FLUX\.2 VAE: 16 latent channels"):
        load_model("flux2-vae", source=str(tmp_path / "vae16"))


def test_pipeline_latents_convert_as_diffusers_does(flux2, kodak_crop):
    from diffusers.pipelines.flux2.pipeline_flux2 import Flux2Pipeline

    stats = pipeline_stats(flux2.model)
    vae = flux2.model.decoder.vae
    assert torch.equal(stats.mean, vae.bn.running_mean) and stats.eps == 1e-4
    images = _images(kodak_crop.crop((0, 0, 64, 32)))  # sides of multiples of 16: whole 2x2 patches

    class Pipeline:  # the pipeline's own encoding code, run on this VAE
        _patchify_latents = staticmethod(Flux2Pipeline._patchify_latents)

    Pipeline.vae = vae
    with torch.no_grad():
        expected = Flux2Pipeline._encode_vae_image(Pipeline(), images * 2 - 1, generator=None)
        raw = flux2.model.encode(images)
    assert expected.shape == (1, 128, 2, 4)
    assert torch.allclose(to_pipeline(raw, stats), expected, atol=1e-5)
    # the pipelines' decode step: tokens -> unpacked -> batch norm undone -> unpatchified -> vae.decode
    tokens = Flux2Pipeline._pack_latents(expected)
    std = torch.sqrt(vae.bn.running_var.view(1, -1, 1, 1) + vae.config.batch_norm_eps)
    undone = Flux2Pipeline._unpatchify_latents(expected * std + vae.bn.running_mean.view(1, -1, 1, 1))
    assert torch.allclose(from_pipeline(unpack(tokens, 2, 4), stats), undone, atol=1e-6)
    assert torch.allclose(undone, raw, atol=1e-5)
    with pytest.raises(ValueError, match="2x2 patches"):
        to_pipeline(torch.zeros(1, 32, 5, 9), stats)
    with pytest.raises(ModelError, match="no batch-norm statistics"):
        pipeline_stats(load_model("taef2"))
    assert isinstance(PipelineStats.of(vae), PipelineStats)
