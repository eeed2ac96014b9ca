"""End-to-end encode/decode through the real TAEF2 model on Kodak crops."""

import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image
from shared_inputs import as_array

import latentcodec
from latentcodec.bench.metrics import psnr
from latentcodec.bench.roundtrip import float_psnr
from latentcodec.engine import bitstream
from latentcodec.engine.errors import InvalidImageError, LatentCodecError, ModelMismatchError


@pytest.fixture(scope="module")
def crop_reference(kodak_crop):
    return as_array(kodak_crop)


def _round_trip(codec, image, **options):
    data = codec.encode(image, **options)
    return data, codec.decode(data)


def test_scalar8_is_within_0_3_db_of_float(codec, crop_reference, kodak_crop):
    ceiling = float_psnr(codec, crop_reference)
    _, decoded = _round_trip(codec, kodak_crop, mode="scalar8")
    assert psnr(crop_reference, as_array(decoded)) > ceiling - 0.3


@pytest.mark.parametrize(
    ("options", "min_psnr"),
    [
        ({"mode": "uniform", "step": 0.25}, 24.0),
        ({"mode": "uniform", "quality": 10}, 18.0),
        ({"mode": "palette"}, 17.0),
    ],
)
def test_lossy_modes_round_trip(codec, kodak_crop, crop_reference, options, min_psnr):
    data, decoded = _round_trip(codec, kodak_crop, **options)
    assert decoded.size == kodak_crop.size and decoded.mode == "RGB"
    assert psnr(crop_reference, as_array(decoded)) > min_psnr
    assert latentcodec.info(data).mode == options["mode"]


def test_quality_trades_rate_for_distortion(codec, kodak_crop, crop_reference):
    sizes, scores = [], []
    for quality in (10, 50, 90):
        data, decoded = _round_trip(codec, kodak_crop, quality=quality)
        sizes.append(len(data))
        scores.append(psnr(crop_reference, as_array(decoded)))
    assert sizes == sorted(sizes) and scores == sorted(scores)


def test_odd_sizes_and_tiny_images(codec, odd_crop):
    for image in (odd_crop, odd_crop.crop((0, 0, 1, 1)), odd_crop.crop((0, 0, 9, 2))):
        _, decoded = _round_trip(codec, image, mode="palette", palette_size=8)
        assert decoded.size == image.size


def test_greyscale_palette_and_alpha_inputs(codec, kodak_crop):
    grey = kodak_crop.convert("L")
    _, decoded = _round_trip(codec, grey)
    assert decoded.mode == "L" and psnr(np.asarray(grey), np.asarray(decoded)) > 20

    rgba = kodak_crop.convert("RGBA")
    alpha = np.tile(np.arange(rgba.width, dtype=np.uint8) * 3, (rgba.height, 1))
    rgba.putalpha(Image.fromarray(alpha))
    data, decoded = _round_trip(codec, rgba)
    assert decoded.mode == "RGBA" and latentcodec.info(data).alpha
    assert np.array_equal(np.asarray(decoded)[:, :, 3], alpha)  # alpha is lossless
    _, dropped = _round_trip(codec, rgba, alpha="drop")
    assert dropped.mode == "RGB"

    la = grey.convert("LA")
    assert codec.decode(codec.encode(la)).mode == "LA"

    palette_image = kodak_crop.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    assert codec.decode(codec.encode(palette_image)).mode == "RGB"

    deep = Image.fromarray(np.asarray(grey).astype(np.uint16) * 257)
    assert deep.mode == "I;16"
    _, decoded = _round_trip(codec, deep)
    assert decoded.mode == "L" and psnr(np.asarray(grey), np.asarray(decoded)) > 20


def test_inputs_of_every_kind(codec, kodak_crop, tmp_path):
    path = tmp_path / "crop.png"
    kodak_crop.save(path)
    buffer = io.BytesIO()
    kodak_crop.save(buffer, format="PNG")
    array = np.asarray(kodak_crop)
    streams = [codec.encode(src) for src in (path, str(path), buffer.getvalue(), kodak_crop, array)]
    assert len(set(streams)) == 1  # same pixels, same bytes, whatever the container
    assert codec.encode(array.astype(np.float32) / 255) == streams[0]


@pytest.mark.parametrize(
    "bad",
    [
        b"not an image",
        np.zeros((4, 4, 5), np.uint8),
        np.zeros((4, 4), np.int32),
        np.full((4, 4), np.nan),
        42,
        "/nope.png",
    ],
)
def test_bad_images_raise_invalid_image(codec, bad):
    with pytest.raises(InvalidImageError):
        codec.encode(bad)


def test_oversized_image_is_refused(codec):
    with pytest.raises(InvalidImageError, match="outside the supported range"):
        codec.encode(Image.new("L", (70000, 1)))


def test_batch_keeps_good_items_and_matches_single_encodes(codec, kodak_crop, odd_crop):
    items = [kodak_crop, b"garbage", odd_crop, kodak_crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    results = codec.encode_batch(items, mode="uniform")
    assert [r.ok for r in results] == [True, False, True, True]
    assert isinstance(results[1].error, InvalidImageError)
    for item, result in zip(items, results, strict=True):
        if result.ok:
            assert result.value == codec.encode(item, mode="uniform")  # batched == one by one, bit for bit

    decoded = codec.decode_batch([results[0].value, b"\x89LCZ broken", results[2].value])
    assert [r.ok for r in decoded] == [True, False, True]
    assert decoded[2].value.size == odd_crop.size
    with pytest.raises(LatentCodecError):
        decoded[1].unwrap()


def test_tensor_api(codec, kodak_crop, crop_reference):
    rgb = torch.from_numpy(crop_reference.transpose(2, 0, 1).copy()).float() / 255
    streams = codec.encode_tensors(torch.stack([rgb, rgb.flip(2)]), mode="scalar8")
    assert streams[0] == codec.encode(kodak_crop, mode="scalar8")
    decoded = codec.decode_tensors(streams)
    assert decoded[0].shape == rgb.shape and decoded[0].dtype == torch.float32
    assert torch.allclose(decoded[0].flip(2), decoded[1], atol=0.15)
    with pytest.raises(InvalidImageError):
        codec.encode_tensors([torch.zeros(4, 8, 8)])


def test_scale_encodes_smaller_and_restores_size(codec, kodak_crop):
    full = codec.encode(kodak_crop, quality=50)
    half = codec.encode(kodak_crop, quality=50, scale=0.5)
    info = latentcodec.info(half)
    assert (info.coded_width, info.coded_height) == (36, 20)
    assert len(half) < len(full)
    assert codec.decode(half).size == kodak_crop.size


def test_stream_from_other_weights_is_refused(codec, kodak_crop):
    data = codec.encode(kodak_crop)
    parsed = bitstream.unpack(data)
    header = parsed.header
    forged = bitstream.pack(
        bitstream.Stream(
            bitstream.Header(**{**header.__dict__, "fingerprint": bytes(8)}), parsed.params, parsed.latents
        )
    )
    with pytest.raises(ModelMismatchError, match="weights"):
        codec.decode(forged)
    renamed = data.replace(b"\x05taef2", b"\x05other")
    renamed = renamed[:-4] + struct.pack("<I", zlib.crc32(renamed[:-4]))
    with pytest.raises(LatentCodecError, match="other"):
        latentcodec.decode(renamed)


def test_bad_options_raise_value_error(codec, kodak_crop):
    for options in ({"mode": "jpeg"}, {"quality": 101}, {"step": 0}, {"palette_size": 1}, {"alpha": "maybe"}):
        with pytest.raises(ValueError):
            codec.encode(kodak_crop, **options)


def test_symbol_width_is_chosen_per_image_within_a_batch(codec, kodak_crop, crop_reference):
    """At step 0.02 a flat grey image fits int8 symbols and the textured crop needs int16, in one batch."""
    flat = Image.new("RGB", kodak_crop.size, (128, 128, 128))
    results = codec.encode_batch([flat, kodak_crop], mode="uniform", step=0.02)
    widths = [bitstream.unpack(r.unwrap()).params[-1] for r in results]
    assert widths == [1, 2]
    assert [r.value for r in results] == [
        codec.encode(flat, mode="uniform", step=0.02),
        codec.encode(kodak_crop, mode="uniform", step=0.02),
    ]
    flat_back, crop_back = codec.decode_tensors([r.value for r in results])
    assert (flat_back - 128 / 255).abs().max() < 0.05
    scalar8 = codec.decode_tensors([codec.encode(kodak_crop, mode="scalar8")])[0]
    assert (crop_back - scalar8).abs().mean() < 0.01  # int16 symbols at a fine step: as good as 8-bit ranges
