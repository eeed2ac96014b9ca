"""The latent denoiser: model, training script, bitstream entry and decoding with and without it."""

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from shared_inputs import SHARED, as_array, kodak_path, train_tiny_denoiser

import latentcodec
from latentcodec.bench.metrics import psnr
from latentcodec.engine import bitstream, stream_edits, strength_search
from latentcodec.engine.coders import PaletteCoder, rms_error, simulate
from latentcodec.engine.denoise import latent_denoiser, registry
from latentcodec.engine.denoise.latent_denoiser import LatentDenoiser
from latentcodec.engine.errors import ModelError, ModelMismatchError
from latentcodec.engine.models import load_model
from latentcodec.engine.models.weights import BUNDLED, file_sha256, resolve
from latentcodec.training import denoiser as training
from latentcodec.training.denoiser import main as train_main


def test_latent_denoiser_is_small_and_starts_as_the_identity():
    model = LatentDenoiser.untrained(32)
    assert sum(p.numel() for p in model.parameters()) < 1_000_000
    latents = torch.randn(2, 32, 5, 7)  # not a multiple of the U-Net's 4: padded inside, cropped back
    out = model(latents, torch.tensor([0.3, 1.2]), 1)
    assert torch.equal(out, latents)


@pytest.mark.parametrize("shape", [(2, 32, 8, 12), (1, 32, 16, 16), (3, 32, 4, 4)])
def test_the_plain_torch_unet_computes_what_diffusers_unet2dmodel_does(shape):
    """The shipped weights in our U-Net and in diffusers' ``UNet2DModel``: equal outputs, bit for bit, and the same
    seeded initial weights (so seeded stand-ins, like the stream fixtures' denoiser, stay what they were)."""
    diffusers = pytest.importorskip("diffusers")
    config = latent_denoiser.unet_config(32)
    torch.manual_seed(0)
    reference = diffusers.UNet2DModel(**config)
    torch.manual_seed(0)
    ours = LatentDenoiser.untrained(32).unet
    torch.nn.init.zeros_(reference.conv_out.weight)  # untrained() zeroes the output layer
    torch.nn.init.zeros_(reference.conv_out.bias)
    assert {k: v.tolist() for k, v in reference.state_dict().items()} == {
        k: v.tolist() for k, v in ours.state_dict().items()
    }
    model, state = latent_denoiser.load(BUNDLED / "latent_denoiser_taef2.safetensors")
    reference.load_state_dict({k: v.float() for k, v in state.items()})
    generator = torch.Generator().manual_seed(sum(shape))
    sample, timesteps = torch.randn(shape, generator=generator), torch.randn(shape[0], generator=generator) * 8
    labels = torch.randint(0, 3, (shape[0],), generator=generator)
    with torch.no_grad():
        expected = reference(sample, timesteps, class_labels=labels).sample
        assert torch.equal(model.unet(sample, timesteps, labels), expected)


def test_the_default_path_imports_neither_diffusers_nor_transformers(tmp_path):
    code = (
        "import sys, latentcodec; from PIL import Image;"
        "data = latentcodec.encode(Image.new('RGB', (40, 24), (200, 90, 30)), step=2.0);"
        "latentcodec.decode(data);"
        "data = latentcodec.encode(Image.new('RGB', (40, 24), (200, 90, 30)), step=2.0, denoiser='latent-denoiser');"
        "assert latentcodec.info(data).denoiser == 'latent-denoiser', latentcodec.info(data);"
        "latentcodec.decode(data);"
        "loaded = {'diffusers', 'transformers'} & set(sys.modules); assert not loaded, loaded"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)


def test_nearby_noise_levels_get_nearby_conditioning():
    unet = LatentDenoiser.untrained(32).unet
    embed = lambda sigma: unet.time_proj(latent_denoiser.timestep(torch.tensor([sigma])))  # noqa: E731
    for sigma in (0.06, 0.3, 1.2):  # the fine steps, middle and the coarsest steps the codec makes
        near, far = (float((embed(sigma * f) - embed(sigma)).norm() / embed(sigma).norm()) for f in (1.01, 1.5))
        assert near < 0.02 and far > 10 * near  # at 1000 sigma, as before, 1% moved it by 0.18 to 0.75


def test_weights_trained_for_another_conditioning_are_refused(tmp_path):
    from safetensors.torch import save_file

    model = LatentDenoiser.untrained(32)
    state = {k: v.contiguous() for k, v in model.unet.state_dict().items()}
    config = json.dumps(latent_denoiser.stored_config(32))
    save_file(state, str(tmp_path / "old.safetensors"), metadata={"config": config})  # as files were written before
    with pytest.raises(ModelError, match="train them again"):
        latent_denoiser.load(tmp_path / "old.safetensors")


def test_the_registry_loads_trained_weights_that_match_its_sha256():
    assert file_sha256(resolve(registry.LATENT_DENOISER_TAEF2)) == registry.LATENT_DENOISER_TAEF2.sha256
    model = registry.load_denoiser("latent-denoiser")
    assert isinstance(model.module, LatentDenoiser)
    latents = torch.randn(1, 32, 8, 8)
    uniform, palette = (model.module(latents, torch.tensor([0.5]), mode) for mode in (1, 2))
    assert not torch.equal(uniform, latents) and not torch.equal(uniform, palette)  # trained, and mode-aware


def test_a_fresh_install_has_the_denoiser_and_low_rate_encodes_name_it(tmp_path, monkeypatch):
    weights = tmp_path / "weights"  # TAEF2 installed (third-party weights never ship), no denoiser beside it
    weights.mkdir()
    (weights / "taef2").symlink_to(SHARED / "models" / "taef2")
    monkeypatch.setenv("LATENTCODEC_WEIGHTS", str(weights))
    monkeypatch.setenv("LATENTCODEC_CACHE", str(tmp_path / "cache"))
    path = resolve(registry.LATENT_DENOISER_TAEF2)
    assert path.parent == BUNDLED and path.stat().st_size < 4 << 20
    monkeypatch.setattr(registry.DENOISERS, "_loaded", {})  # load it from there (restored after the test)
    codec = latentcodec.Codec("taef2", device="cpu")
    photo = Image.open(SHARED / "data" / "photos" / "002.png").convert("RGB").crop((0, 0, 256, 256))
    assert latentcodec.info(codec.encode(photo, step=4.0)).denoiser == "latent-denoiser"  # auto: it helps here


def test_training_runs_two_steps_on_tiny_crops(tmp_path):
    output = tmp_path / "denoiser.safetensors"
    train_tiny_denoiser(tmp_path / "train", output, steps=2)
    model, state = latent_denoiser.load(output)
    assert model(torch.zeros(1, 32, 16, 16), torch.tensor([0.5]), 2).shape == (1, 32, 16, 16)
    assert all(t.dtype == torch.float16 for t in state.values())
    with pytest.raises(ModelError, match="sha256"):
        latent_denoiser.load(output, sha256="0" * 64)
    for n in range(3):  # the same weights make the same file (its sha256 is what the registry pins)
        latent_denoiser.save(model, tmp_path / f"again{n}.safetensors", {"model": "taef2", "steps": "2", "seed": "0"})
    assert len({file_sha256(tmp_path / f"again{n}.safetensors") for n in range(3)}) == 1


def test_weights_a_caller_trained_are_used_when_named(tmp_path, kodak_crop, monkeypatch):
    output = tmp_path / "mine.safetensors"
    train_tiny_denoiser(tmp_path / "train", output, steps=1)
    monkeypatch.setattr(registry.DENOISERS, "_loaded", {})  # forget the loaded denoiser (restored after the test)
    default = registry.load_denoiser("latent-denoiser")
    monkeypatch.setenv("LATENTCODEC_LATENT_DENOISER", str(output))
    mine = registry.load_denoiser("latent-denoiser")  # no sha256 in the registry for it: the caller named it
    assert mine.fingerprint != default.fingerprint
    stream = latentcodec.Codec("taef2", device="cpu").encode(kodak_crop, step=2.0, denoiser="latent-denoiser")
    assert bitstream.unpack(stream).header.denoiser.fingerprint == mine.fingerprint
    monkeypatch.delenv("LATENTCODEC_LATENT_DENOISER")
    with pytest.raises(ModelMismatchError):  # other weights refuse a stream made for these
        latentcodec.Codec("taef2", device="cpu").decode(stream)


def test_training_quantizes_crops_like_the_codec():
    config = training.TrainConfig(Path(), Path(), min_step=3.0, max_step=4.0, min_palette=4, max_palette=16)
    assert training.palette_sizes(config) == [4, 8, 16]
    images = torch.randn(4, 32, 24, 24) * torch.linspace(0.2, 3, 24)  # the crops (corners) are calmer than the rest
    samples = []
    for image in images:
        palettes = [PaletteCoder().fit(image[None], size)[3] for size in (4, 8, 16)]
        noise = [simulate(image[None], mode="palette", palette_size=size).noise.item() for size in (4, 8, 16)]
        samples.append(training.Sample(image, torch.zeros(3, 8, 8), [p[0] for p in palettes], noise))
    crops = images[..., :8, :8]
    quantized, sigma = training.quantize(crops, samples, torch.Generator().manual_seed(0), config)
    for row in (1, 3):  # palette rows: every vector is an entry of its own image's palette (one size per batch)
        distances = [
            torch.cdist(quantized[row].flatten(1).T, palette, compute_mode="donot_use_mm_for_euclid_dist").amin(1)
            for palette in samples[row].palettes
        ]
        exact = [int(d.max() == 0) for d in distances]
        assert sum(exact) == 1 and sigma[row] == samples[row].palette_noise[exact.index(1)]
    for row in (0, 2):  # uniform rows: the coder's symbols of one step, with the whole image's recorded noise level
        values = quantized[row].unique()
        step = values.abs()[values != 0].min().item()
        one_step = {"mode": "uniform", "step": step, "channel_steps": False}  # as the shipped denoiser was trained
        assert torch.equal(quantized[row], simulate(crops[row][None], **one_step).latents[0])
        whole = simulate(images[row][None], **one_step).noise
        assert torch.allclose(sigma[row], whole[0], rtol=1e-3)
        assert sigma[row] > 1.2 * rms_error(crops[row][None], quantized[row][None])[0]


def test_training_validates_on_whole_held_out_images_as_the_codec_decodes_them(tmp_path, codec):
    path = sorted((SHARED / "data" / "train").iterdir())[-1]
    Image.open(path).convert("RGB").crop((0, 0, 160, 144)).save(tmp_path / "held.png")
    config = training.TrainConfig(tmp_path, tmp_path / "out", crop=16, max_palette=8, augment=False)
    model = load_model("taef2")
    samples = training.encode_folder([tmp_path / "held.png"], model, config)[0]
    scores = training.validate(LatentDenoiser.untrained(), model, samples, config)  # the identity
    assert [s.point for s in scores] == ["uniform step 4", "uniform step 2", "uniform step 1", "palette 8"]
    assert all(s.measured == s.plain == s.auto for s in scores)
    reference = as_array(Image.open(tmp_path / "held.png"))
    decoded = codec.decode(codec.encode(reference, mode="uniform", step=2.0, denoiser=None, channel_steps=False))
    assert psnr(reference, as_array(decoded)) == pytest.approx(scores[1].plain, abs=0.05)
    harmful = LatentDenoiser.untrained()
    torch.nn.init.normal_(harmful.unet.conv_out.weight, std=0.5)
    scores = training.validate(harmful, model, samples, config)
    assert all(s.measured < s.plain - 0.1 and s.auto >= s.plain for s in scores)


def test_training_views_mirror_and_halve_images():
    image = Image.fromarray(np.arange(64 * 48 * 3, dtype=np.uint8).reshape(48, 64, 3))
    plain, mirrored, half = training.views(image, augment=True)
    assert np.array_equal(np.asarray(mirrored), np.asarray(plain)[:, ::-1]) and half.size == (32, 24)
    assert training.views(image, augment=False) == [image]


def test_training_refuses_kodak(tmp_path):
    with pytest.raises(ValueError, match="Kodak"):
        train_main([str(SHARED / "data" / "kodak"), str(tmp_path / "x.safetensors"), "--steps", "1"])


@pytest.fixture(scope="module")
def denoised_stream(kodak_crop):
    return latentcodec.encode(kodak_crop, model="taef2", mode="uniform", step=2.0, denoiser="latent-denoiser")


def test_streams_name_the_denoiser_they_were_encoded_for(denoised_stream, kodak_crop):
    details = latentcodec.info(denoised_stream)
    assert details.denoiser == "latent-denoiser" and details.noise_level > 0.1
    assert details.version == 4 and details.entropy == "passes"  # version 4 carries the denoiser entry too
    assert latentcodec.info(latentcodec.encode(kodak_crop, model="taef2", mode="scalar8")).denoiser is None
    plain = latentcodec.encode(kodak_crop, model="taef2", step=2.0, denoiser=None, entropy="zstd")
    assert latentcodec.info(plain).version == 1
    assert stream_edits.without_denoiser(denoised_stream) == latentcodec.encode(
        kodak_crop, model="taef2", step=2.0, denoiser=None
    )


@pytest.mark.parametrize("options", [{"mode": "uniform", "step": 3.0}, {"mode": "palette", "palette_size": 16}])
def test_auto_keeps_the_denoising_strength_with_the_best_psnr(kodak_crop, codec, options):
    named = codec.encode(kodak_crop, denoiser="latent-denoiser", denoiser_strength=1.0, **options)  # measured
    variants = strength_search.strength_variants(named)
    assert variants[0] == codec.encode(kodak_crop, denoiser=None, **options)
    levels = [latentcodec.info(v).noise_level for v in variants[1:]]
    assert levels == pytest.approx(
        [s * latentcodec.info(named).noise_level for s in strength_search.STRENGTHS], rel=1e-3
    )
    reference = as_array(kodak_crop)
    scores = [psnr(reference, as_array(codec.decode(v))) for v in variants]
    assert len(set(scores)) == len(scores)  # each strength decodes to a different picture
    assert codec.encode(kodak_crop, strength_by="pixels", **options) == variants[scores.index(max(scores))]
    chosen, measured = latentcodec.info(codec.encode(kodak_crop, **options)), latentcodec.info(named).noise_level
    strengths = [s * measured for s in strength_search.STRENGTHS]  # "crops", the default: none or one of them
    assert chosen.denoiser is None or chosen.noise_level == pytest.approx(
        min(strengths, key=lambda level: abs(level - chosen.noise_level)), rel=2e-3
    )


def test_a_named_denoiser_records_its_default_strength_unless_told_otherwise(kodak_crop, codec):
    options = {"mode": "uniform", "step": 3.0, "denoiser": "latent-denoiser"}
    measured = latentcodec.info(codec.encode(kodak_crop, denoiser_strength=1.0, **options)).noise_level
    named = codec.encode(kodak_crop, **options)
    default = registry.denoiser_spec("latent-denoiser").strength
    assert 0 < default < 1
    assert latentcodec.info(named).noise_level == pytest.approx(default * measured, rel=1e-3)
    stronger = codec.encode(kodak_crop, denoiser_strength=0.8, **options)
    assert latentcodec.info(stronger).noise_level == pytest.approx(0.8 * measured, rel=1e-3)
    assert stream_edits.without_denoiser(stronger) == stream_edits.without_denoiser(named)  # the same symbols
    assert not np.array_equal(as_array(codec.decode(stronger)), as_array(codec.decode(named)))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"denoiser_strength": 0.5}, "needs a named denoiser"),
        ({"denoiser": None, "denoiser_strength": 0.5}, "needs a named denoiser"),
        ({"denoiser": "latent-denoiser", "denoiser_strength": 0.0}, "denoiser_strength must be"),
        ({"denoiser": "latent-denoiser", "denoiser_strength": 5.0}, "denoiser_strength must be"),
    ],
)
def test_denoiser_strength_is_checked(kodak_crop, options, message):
    with pytest.raises(ValueError, match=message):
        latentcodec.encode(kodak_crop, model="taef2", mode="uniform", step=3.0, **options)


def test_a_noise_level_can_be_rewritten_only_in_a_stream_that_names_a_denoiser(denoised_stream, kodak_crop):
    level = latentcodec.info(denoised_stream).noise_level
    assert stream_edits.with_noise_level(denoised_stream, level) == denoised_stream
    assert latentcodec.info(stream_edits.with_noise_level(denoised_stream, 0.25)).noise_level == 0.25
    with pytest.raises(ValueError, match="names no denoiser"):
        stream_edits.with_noise_level(latentcodec.encode(kodak_crop, model="taef2", step=2.0, denoiser=None), 0.25)


def test_auto_drops_a_denoiser_that_hurts(kodak_crop, monkeypatch):
    monkeypatch.setattr(registry.LoadedDenoiser, "pass_fn", lambda self, key: lambda latents, sigma: latents + 3)
    codec = latentcodec.Codec("taef2", device="cpu")  # a fresh codec: its denoiser passes are built anew
    streams = codec.encode_batch([kodak_crop, kodak_crop.transpose(0)], mode="uniform", step=2.0)
    plain = codec.encode_batch([kodak_crop, kodak_crop.transpose(0)], mode="uniform", step=2.0, denoiser=None)
    assert [r.unwrap() for r in streams] == [r.unwrap() for r in plain]
    forced = codec.encode(kodak_crop, mode="uniform", step=2.0, denoiser="latent-denoiser")
    assert latentcodec.info(forced).denoiser == "latent-denoiser"  # named explicitly: no check


def test_denoiser_stream_decodes_with_and_without_it(denoised_stream, kodak_crop, codec):
    cleaned = latentcodec.decode(denoised_stream)
    plain = latentcodec.decode(denoised_stream, denoise=False)
    assert cleaned.size == plain.size == kodak_crop.size
    assert not np.array_equal(as_array(cleaned), as_array(plain))
    undenoised = latentcodec.encode(kodak_crop, model="taef2", mode="uniform", step=2.0, denoiser=None)
    assert np.array_equal(as_array(latentcodec.decode(undenoised)), as_array(plain))  # same latents, same decoder
    batch = codec.decode_batch([denoised_stream, undenoised, denoised_stream])
    assert np.array_equal(as_array(batch[0].unwrap()), as_array(cleaned))
    assert np.array_equal(as_array(batch[1].unwrap()), as_array(plain))


def test_denoiser_weights_must_match_the_stream(denoised_stream, codec):
    stream = bitstream.unpack(denoised_stream)
    ref = dataclasses.replace(stream.header.denoiser, fingerprint=bytes(8))
    altered = bitstream.pack(dataclasses.replace(stream, header=dataclasses.replace(stream.header, denoiser=ref)))
    with pytest.raises(ModelMismatchError, match="denoise=False"):
        codec.decode(altered)
    assert codec.decode(altered, denoise=False).size == codec.decode(denoised_stream).size


def test_missing_denoiser_weights_fail_only_the_denoised_decode(denoised_stream, monkeypatch):
    codec = latentcodec.Codec("taef2", device="cpu")
    monkeypatch.setattr(registry.DENOISERS, "_loaded", {})  # forget the loaded denoiser (restored after the test)
    monkeypatch.setenv("LATENTCODEC_WEIGHTS", str(SHARED / "missing"))
    monkeypatch.setenv("LATENTCODEC_CACHE", str(SHARED / "missing"))
    unbundled = dataclasses.replace(registry.LATENT_DENOISER_TAEF2, bundled="")
    monkeypatch.setattr(registry, "LATENT_DENOISER_TAEF2", unbundled)
    with pytest.raises(ModelError, match="not found"):
        codec.decode(denoised_stream)
    assert codec.decode(denoised_stream, denoise=False).size == (72, 40)


def test_auto_encodes_without_a_denoiser_whose_weights_are_not_installed(kodak_crop, codec, monkeypatch):
    plain = codec.encode(kodak_crop, step=2.0, denoiser=None)
    missing = dataclasses.replace(registry.LATENT_DENOISER_TAEF2, filename="missing.safetensors", bundled="")
    monkeypatch.setattr(registry, "LATENT_DENOISER_TAEF2", missing)
    monkeypatch.setattr(registry.DENOISERS, "_loaded", {})  # forget the loaded denoiser (restored after the test)
    with pytest.warns(UserWarning, match="without a denoiser"):
        assert codec.encode(kodak_crop, step=2.0) == plain
    with pytest.raises(ModelError, match="not found"):  # a denoiser named explicitly must be there
        codec.encode(kodak_crop, step=2.0, denoiser="latent-denoiser")


def test_denoise_gain_bench_reports_both_decodes_and_the_auto_choice(tmp_path, codec):
    from latentcodec.bench import denoise

    paths = [tmp_path / "a.png", tmp_path / "b.png"]
    for index, path in enumerate(paths):  # MS-SSIM needs sides over 160 pixels
        Image.open(kodak_path(index + 1)).crop((64, 64, 264, 240)).save(path)
    points = [
        ("uniform step 3", {"mode": "uniform", "step": 3.0}),
        ("palette 8", {"mode": "palette", "palette_size": 8}),
    ]
    records = denoise.run(codec, paths, points)
    assert [(r.image, r.point) for r in records] == [(p.name, label) for p in paths for label, _ in points]
    for r in records:
        assert r.psnr_auto >= r.psnr - 1e-9 and r.noise_level > 0
        image = Image.open(tmp_path / r.image)
        named = codec.decode(codec.encode(image, denoiser="latent-denoiser", **dict(points)[r.point]))
        assert psnr(as_array(image), as_array(named)) == pytest.approx(r.psnr_denoised)  # at the default strength
        chosen = latentcodec.info(codec.encode(image, strength_by="pixels", **dict(points)[r.point]))  # "auto"
        assert (chosen.denoiser is not None) == r.kept
        assert chosen.noise_level == (pytest.approx(r.strength * r.noise_level, rel=1e-3) if r.kept else None)
    rows = denoise.summarize(records)
    assert [row["point"] for row in rows] == [label for label, _ in points]
    assert rows[0]["psnr_gain"] == pytest.approx(np.mean([r.psnr_denoised - r.psnr for r in records[::2]]))
    assert rows[0]["psnr_auto"] >= rows[0]["psnr"] - 1e-9
    assert sum(map(int, rows[0]["strengths"].split("/"))) == rows[0]["kept"]
    assert denoise.format_table(rows).count("\n") == 3


def test_auto_strength_in_a_batch_of_int8_and_int16_symbols(codec, kodak_crop, monkeypatch):
    """Rows of one batch may store their symbols at different widths: each is dequantized at its own width before
    the strength search decodes it."""
    seen = []
    choose = strength_search.sampled_strengths
    monkeypatch.setattr(
        strength_search, "sampled_strengths", lambda *args: seen.append(args[1].clone()) or choose(*args)
    )
    flat, step = Image.new("RGB", kodak_crop.size, (128, 128, 128)), 0.02
    streams = [r.unwrap() for r in codec.encode_batch([flat, kodak_crop], step=step, channel_steps=False)]
    assert [bitstream.unpack(s).params[-1] for s in streams] == [1, 2]  # symbol widths: int8, then int16
    rgb = torch.from_numpy(np.array(kodak_crop)).permute(2, 0, 1)[None].float() / 255
    expected = torch.round(codec.latents_of(rgb)[0] / step).clamp(-32767, 32767) * step
    assert torch.allclose(seen[0][1], expected, atol=1e-5)
