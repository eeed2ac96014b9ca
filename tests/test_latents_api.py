"""Latent streams: latents of a named space in, latents (or images, by any decoder of the space) out."""

import hashlib
import io
import json
import math
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from safetensors.torch import load_file, save_file

import latentcodec
from latentcodec.bindings.cli import main
from latentcodec.engine import bitstream
from latentcodec.engine.coders import UniformCoder
from latentcodec.engine.errors import (
    ChecksumError,
    CorruptStreamError,
    DeviceError,
    InvalidLatentsError,
    LatentCodecError,
    ModelError,
    ModelMismatchError,
    NotAStreamError,
    TruncatedStreamError,
    UnknownModelError,
)
from latentcodec.engine.latent_steps import finest_step


def _latents(*shape: int, scale: float = 2.0, seed: int = 0) -> torch.Tensor:
    """Latent-like values (a fixed formula: the same on every torch)."""
    n = math.prod(shape)
    index = torch.arange(n, dtype=torch.float64)
    values = torch.sin(index * 0.37 + seed) * torch.cos(index * 0.011 + 2 * seed) * scale
    return values.reshape(shape).float()


def _rmse(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).square().mean().sqrt())


def _reseal(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


X = _latents(32, 6, 10)


# round trips and error bounds --------------------------------------------------------------------------------------


@pytest.mark.parametrize("step", [0.05, 0.5, 2.0])
def test_uniform_latents_are_within_half_a_step(step):
    data = latentcodec.encode_latents(X, step=step)
    decoded = latentcodec.decode_latents(data)
    assert decoded.shape == X.shape and decoded.dtype == torch.float32
    assert float((decoded - X).abs().max()) <= step / 2 * (1 + 1e-5)
    details = latentcodec.info(data)
    assert (details.version, details.latent_space, details.model, details.mode) == (5, "flux2", "", "uniform")
    assert (details.width, details.height) == (80, 48)  # the image the latents decode to
    assert details.decoder_noise_level == pytest.approx(_rmse(decoded, X), rel=1e-3, abs=1e-4)


def test_fine_int8_symbols_take_the_passes_coder_and_coarse_int16_ones_zstd():
    assert latentcodec.info(latentcodec.encode_latents(X, step=0.5)).entropy == "passes"
    assert latentcodec.info(latentcodec.encode_latents(X, step=0.01)).entropy == "zstd"  # int16 symbols
    assert latentcodec.info(latentcodec.encode_latents(X, step=0.5, entropy="zstd")).entropy == "zstd"


def test_scalar8_latents_are_within_half_a_level_of_each_channel():
    decoded = latentcodec.decode_latents(latentcodec.encode_latents(X, mode="scalar8"))
    flat = X.flatten(1)
    half_level = (flat.amax(1) - flat.amin(1)) / 510
    error = (decoded - X).abs().flatten(1).amax(1)
    assert (error <= half_level * 1.01 + 2e-3).all()  # the range is stored as float16, rounded outwards


def test_palette_latents_keep_the_shape_and_most_of_the_signal():
    decoded = latentcodec.decode_latents(latentcodec.encode_latents(X, mode="palette", palette_size=64))
    assert decoded.shape == X.shape and _rmse(decoded, X) < 0.6 * float(X.std())


@pytest.mark.parametrize(
    "latents",
    [X.half(), X.bfloat16(), X.double(), X.numpy(), X.numpy().astype(np.float16), X[None]],
    ids=["float16", "bfloat16", "float64", "numpy", "numpy-float16", "batch-of-one"],
)
def test_dtypes_and_a_batch_of_one_code_as_their_float32_values(latents):
    values = torch.as_tensor(latents).float().reshape(X.shape)
    decoded = latentcodec.decode_latents(latentcodec.encode_latents(latents, step=0.25))
    assert decoded.shape == X.shape and float((decoded - values).abs().max()) <= 0.125 * (1 + 1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_decoded_latents_come_in_the_dtype_asked(dtype):
    assert latentcodec.decode_latents(latentcodec.encode_latents(X), dtype=dtype).dtype == dtype


def test_target_rmse_chooses_the_coarsest_step_within_it():
    for target in (0.01, 0.1):
        data = latentcodec.encode_latents(X, target_rmse=target)
        error = _rmse(latentcodec.decode_latents(data), X)
        assert 0.8 * target <= error <= target * (1 + 1e-4)
    with pytest.raises(ValueError, match="uniform"):
        latentcodec.encode_latents(X, mode="palette", target_rmse=0.1)
    with pytest.raises(ValueError, match="give one of"):
        latentcodec.encode_latents(X, step=0.5, target_rmse=0.1)


def test_batches_equal_single_calls_and_mixed_shapes_are_fine():
    batch = torch.stack([X, -X, X * 0.5])
    for mode in ("uniform", "scalar8", "palette"):
        results = latentcodec.encode_latents_batch(batch, mode=mode)
        assert [r.value for r in results] == [latentcodec.encode_latents(x, mode=mode) for x in batch]
    mixed = [X, _latents(32, 3, 5, seed=1).numpy(), _latents(32, 9, 2, seed=2).half()]
    streams = [r.unwrap() for r in latentcodec.encode_latents_batch(mixed, step=0.1)]
    decoded = [r.unwrap() for r in latentcodec.decode_latents_batch(streams)]
    assert [tuple(d.shape) for d in decoded] == [(32, 6, 10), (32, 3, 5), (32, 9, 2)]


def test_a_bad_latent_fails_alone():
    bad = X.clone()
    bad[3, 2, 1] = float("nan")
    results = latentcodec.encode_latents_batch([X, bad, X[:4], -X], step=0.5)
    assert [r.ok for r in results] == [True, False, False, True]
    assert isinstance(results[1].error, InvalidLatentsError) and "NaN" in str(results[1].error)
    assert "32 channels, not 4" in str(results[2].error)
    decoded = latentcodec.decode_latents_batch([results[0].value, b"junk", results[3].value])
    assert [r.ok for r in decoded] == [True, False, True] and isinstance(decoded[1].error, NotAStreamError)
    assert torch.equal(decoded[0].value, -decoded[2].value)


def test_latent_streams_stay_bit_for_bit():
    """Pinned: a change to these bytes is a format change (version 5 streams must keep decoding as they did)."""
    pinned = {
        "uniform": "23bb66ccc946f0a8",
        "scalar8": "bfb803f3f97feba3",
        "palette": "8d590b1b513f0071",
    }
    digests = {mode: hashlib.sha256(latentcodec.encode_latents(X, mode=mode)).hexdigest()[:16] for mode in pinned}
    assert digests == pinned


# streams: images from latents, latents from images ----------------------------------------------------------------


@pytest.fixture(scope="module")
def image_stream(kodak_crop):
    """A taef2 image stream of a 72x40 crop (a whole latent grid: 9x5), one step for all channels, and its coded
    latents as a latent stream (of that step: the same symbols)."""
    data = latentcodec.encode(kodak_crop, model="taef2", step=0.5, denoiser=None, channel_steps=False)
    return data, latentcodec.encode_latents(latentcodec.decode_latents(data), step=0.5)


def test_an_image_streams_latents_are_its_quantized_encoder_latents(codec, odd_crop):
    data = codec.encode(odd_crop, step=0.5, denoiser=None)
    rgb = torch.from_numpy(np.array(odd_crop)).permute(2, 0, 1)[None]
    steps = UniformCoder().encode_steps(latentcodec.EncodeOptions(step=0.5), 1, 32)[0][:, None, None]  # per channel
    expected = torch.round(codec.latents_of(rgb)[0] / steps) * steps
    decoded = latentcodec.decode_latents(data)
    assert decoded.shape == (32, 3, 5) and torch.equal(decoded, expected)  # 37x21: the whole padded grid
    assert torch.equal(codec.decode_latents(data), decoded)


def test_a_latent_stream_renders_with_any_decoder_of_its_space(image_stream, codec):
    image_data, latent_data = image_stream
    assert torch.equal(latentcodec.decode_latents(latent_data), latentcodec.decode_latents(image_data))
    by_taef2 = latentcodec.decode(latent_data, model="taef2")
    assert by_taef2.size == (72, 40) and by_taef2.mode == "RGB"
    assert np.array_equal(np.asarray(by_taef2), np.asarray(latentcodec.decode(image_data)))  # same latents, decoder
    by_default = latentcodec.decode(latent_data)  # taef2-q2, the flux2 space's default
    by_q2 = latentcodec.decode(latent_data, model="taef2-q2")
    assert np.array_equal(np.asarray(by_default), np.asarray(by_q2)) and by_q2.size == (72, 40)
    difference = np.abs(np.asarray(by_q2, dtype=np.int16) - np.asarray(by_taef2, dtype=np.int16))
    assert difference.max() <= 2  # noise level 0: taef2-q2 runs TAEF2's decoder
    assert np.array_equal(np.asarray(codec.decode(latent_data)), np.asarray(by_taef2))
    assert Image.open(io.BytesIO(latent_data)).size == (72, 40)


def test_decoders_of_other_spaces_and_other_models_are_refused(image_stream):
    image_data, latent_data = image_stream
    with pytest.raises(ModelMismatchError, match="'flux2' space"):
        latentcodec.decode(latent_data, model="sd-vae")  # refused before its weights are looked for
    with pytest.raises(ModelMismatchError, match="made by model 'taef2'"):
        latentcodec.decode(image_data, model="taef2-q2")
    with pytest.raises(ModelError):
        latentcodec.decode(latent_data, models={"taef2"})  # the default renderer is not allowed


def test_codec_forms_and_the_network_passes(codec):
    results = codec.encode_latents_batch(torch.stack([X, X * 0.5]), step=0.5)
    decoded = codec.decode_latents_batch([r.unwrap() for r in results], dtype=torch.float16)
    assert [d.unwrap().dtype for d in decoded] == [torch.float16] * 2
    assert codec.encode_latents(X, step=0.5) == results[0].value
    images = codec.images_of(X[None])
    assert images.shape == (1, 3, 48, 80) and codec.latents_of(images.clamp(0, 1)).shape == (1, 32, 6, 10)
    with pytest.raises(NotAStreamError, match="images_of"):
        codec.decode_latents(X)  # the old name of the decoder pass points to the new one
    with pytest.raises(InvalidLatentsError, match="latents_of"):
        codec.encode_latents(torch.rand(3, 40, 72))  # an image where latents were expected
    meta = torch.zeros(32, 4, 4, device="meta")
    with pytest.raises(InvalidLatentsError, match="cannot read latents"):
        codec.encode_latents(meta)
    with pytest.raises(DeviceError, match="'meta' is not available"):
        latentcodec.encode_latents(meta)  # module-level calls code where the latents are


# hostile input -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("latents", "message"),
    [
        (torch.full((32, 4, 4), float("inf")), "NaN or infinite"),
        (torch.full((32, 4, 4), 70000.0), "over the limit"),
        (torch.zeros(4, 4, 4), "32 channels, not 4"),
        (torch.zeros(32, 4), r"\[C, h, w\]"),
        (torch.zeros(1, 1, 32, 4, 4), r"\[C, h, w\]"),
        (torch.zeros(2, 32, 4, 4), "encode_latents_batch"),
        (torch.zeros(32, 0, 4), "outside the supported range"),
        (torch.zeros(1).expand(32, 9000, 1), "outside the supported range"),  # 72000 pixels high
        (torch.zeros(1).expand(32, 2048, 1024), "outside the supported range"),  # 134 Mpixel
        (torch.zeros(32, 4, 4, dtype=torch.int64), "not torch.int64"),
        (np.zeros((32, 4, 4), dtype=np.uint8), "not uint8"),
        (torch.zeros(32, 4, 4, dtype=torch.bool), "not torch.bool"),
        ([[0.0]], "tensor or a numpy array"),
        (np.zeros((32, 4, 4), dtype=object), "not object"),
    ],
)
def test_hostile_latents_are_refused_with_clear_errors(latents, message):
    with pytest.raises(InvalidLatentsError, match=message):
        latentcodec.encode_latents(latents)


def test_a_step_too_fine_for_the_magnitudes_is_refused():
    big = torch.full((32, 2, 2), 100.0)
    with pytest.raises(InvalidLatentsError, match="need a step of at least"):
        latentcodec.encode_latents(big, step=0.001)
    assert finest_step(big) == pytest.approx(100 / 32767, rel=1e-6)
    decoded = latentcodec.decode_latents(latentcodec.encode_latents(big, step=finest_step(big)))
    assert float((decoded - big).abs().max()) <= finest_step(big) / 2


def test_unknown_spaces_bad_options_and_batches_raise_at_once():
    with pytest.raises(UnknownModelError, match="unknown latent space 'sdxl'; known: flux2"):
        latentcodec.encode_latents(X, latent_space="sdxl")
    with pytest.raises(ValueError, match="image options scale"):
        latentcodec.encode_latents(X, scale=0.5)
    with pytest.raises(ValueError, match="unknown options"):
        latentcodec.encode_latents(X, strength=2)
    with pytest.raises(ValueError, match="LatentOptions, not EncodeOptions"):
        latentcodec.encode_latents(X, options=latentcodec.EncodeOptions())
    options = latentcodec.LatentOptions(mode="scalar8")
    assert latentcodec.encode_latents(X, options=options) == latentcodec.encode_latents(X, mode="scalar8")
    with pytest.raises(InvalidLatentsError, match=r"\[B, C, h, w\]"):
        latentcodec.encode_latents_batch(X)
    with pytest.raises(ValueError, match="float16, bfloat16"):
        latentcodec.decode_latents(latentcodec.encode_latents(X), dtype=torch.int8)
    with pytest.raises(ModelError, match="names no latent space"):
        latentcodec.Codec("sd-vae", device="cpu").encode_latents(torch.zeros(4, 2, 2))


def test_corrupt_latent_streams_raise_the_stream_errors():
    data = latentcodec.encode_latents(X, step=0.5)
    assert bitstream.unpack(data).header.latent_space == "flux2"
    with pytest.raises(ChecksumError):
        latentcodec.decode_latents(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(TruncatedStreamError):
        latentcodec.decode_latents(_reseal(data[:30]))
    body = data[:-4]
    flags = body[5]
    for bad_flags in (flags | bitstream.FLAG_DENOISE, flags | bitstream.FLAG_ALPHA, flags & ~bitstream.FLAG_LATENTS):
        with pytest.raises(CorruptStreamError, match="unknown flags"):
            latentcodec.decode_latents(_reseal(body[:5] + bytes([bad_flags]) + body[6:]))
    v4_flagged = _reseal(body[:4] + bytes([4]) + body[5:])  # an image-stream version with the latents flag
    with pytest.raises(CorruptStreamError, match="unknown flags"):
        latentcodec.decode_latents(v4_flagged)
    name_at = 4 + 4 + 16 + 1  # magic, version to mode, sizes, entropy method
    assert body[name_at : name_at + 6] == b"\x05flux2"
    with pytest.raises(UnknownModelError, match="latent space 'flux3'"):
        latentcodec.decode_latents(_reseal(body[:name_at] + b"\x05flux3" + body[name_at + 6 :]))
    odd_width = _reseal(body[:8] + struct.pack("<I", 81) + body[12:16] + struct.pack("<I", 81) + body[20:])
    with pytest.raises(CorruptStreamError, match="not a latent grid"):
        latentcodec.decode_latents(odd_width)
    resized = _reseal(body[:16] + struct.pack("<I", 72) + body[20:])
    with pytest.raises(CorruptStreamError, match="not resized"):
        latentcodec.decode_latents(resized)


LATENT_STREAMS = [latentcodec.encode_latents(X[:, :2, :3] * 0.3, mode=m) for m in ("uniform", "scalar8", "palette")]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_resealed_mutations_of_latent_streams_fail_cleanly_or_decode_to_their_shape(data):
    body = bytearray(data.draw(st.sampled_from(LATENT_STREAMS))[:-4])
    for _ in range(data.draw(st.integers(1, 4))):
        body[data.draw(st.integers(0, len(body) - 1))] = data.draw(st.integers(0, 255))
    mutated = _reseal(bytes(body))
    try:
        header = bitstream.unpack(mutated).header
        latents = latentcodec.decode_latents(mutated)
        image = latentcodec.decode(mutated, model="taef2", max_pixels=1 << 16)
    except LatentCodecError:
        return
    assert latents.shape[1:] == (header.height // 8, header.width // 8)  # an image stream's grid: its model's
    assert image.size == (header.width, header.height)


# command line ------------------------------------------------------------------------------------------------------


def test_cli_codes_latent_files_and_writes_latents(tmp_path, capsys):
    np.save(tmp_path / "a.npy", X.numpy())
    save_file({"latents": (X * 0.5)[None].to(torch.bfloat16)}, tmp_path / "b.safetensors")
    np.save(tmp_path / "bad.npy", np.full((32, 2, 2), np.nan, dtype=np.float32))
    inputs = [str(tmp_path / name) for name in ("a.npy", "b.safetensors", "bad.npy")]
    assert main(["encode", "--latents", *inputs, "-o", str(tmp_path / "out") + "/", "--step", "0.25", "--json"]) == 1
    out, err = capsys.readouterr()
    records = {Path(r["input"]).name: r for r in map(json.loads, out.splitlines())}
    assert records["a.npy"]["output"] == str(tmp_path / "out" / "a.lcz") and "NaN" in records["bad.npy"]["error"]
    assert "bad.npy: latents hold NaN" in err
    assert (records["b.safetensors"]["width"], records["b.safetensors"]["height"]) == (80, 48)
    streams = [str(tmp_path / "out" / name) for name in ("a.lcz", "b.lcz")]
    assert main(["decode", "--latents", *streams, "-o", str(tmp_path / "dec") + "/"]) == 0
    a = load_file(tmp_path / "dec" / "a.safetensors")["latents"]
    assert a.dtype == torch.float32 and float((a - X).abs().max()) <= 0.125 * (1 + 1e-5)
    assert main(["decode", "--latents", streams[1], "-o", str(tmp_path / "b.npy")]) == 0
    b = torch.from_numpy(np.load(tmp_path / "b.npy"))
    assert float((b - (X * 0.5).bfloat16().float()).abs().max()) <= 0.125 * (1 + 1e-5)
    assert main(["--model", "taef2", "decode", streams[0], "-o", str(tmp_path / "a.png")]) == 0
    assert Image.open(tmp_path / "a.png").size == (80, 48)
    capsys.readouterr()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["encode", "--latents", "x.npy", "--scale", "0.5"], "--scale: image options"),
        (["encode", "x.png", "--target-rmse", "0.1"], "need --latents"),
        (["encode", "--latents", "x.png"], "latent format"),
        (["encode", "--latents", "x.npy", "--latent-space", "sdxl"], "unknown latent space"),
        (["decode", "--latents", "x.lcz", "-o", "y.png"], "latent format"),
    ],
)
def test_cli_latent_mistakes_are_usage_errors(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert message in capsys.readouterr().err
