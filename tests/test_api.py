"""The API as the README documents it: streams decode and describe from bytes or paths, ``encode`` takes RGB
tensors, and a device this machine lacks is refused when the Codec is made."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from shared_inputs import REPO, as_array

import latentcodec
from latentcodec import Codec
from latentcodec.engine import info as info_module
from latentcodec.engine.errors import (
    CorruptStreamError,
    DeviceError,
    InvalidImageError,
    InvalidInputError,
    NotAStreamError,
)

FAST = {"mode": "scalar8", "entropy": "zstd"}  # no searches, no context model: the surfaces are what is tested


@pytest.fixture(scope="module")
def stream(codec, kodak_crop) -> bytes:
    return codec.encode(kodak_crop, **FAST)


@pytest.fixture(scope="module")
def stream_file(stream, tmp_path_factory):
    path = tmp_path_factory.mktemp("streams") / "x.lcz"
    path.write_bytes(stream)
    return path


def test_decode_and_info_take_paths_as_encode_does(codec, stream, stream_file):
    assert latentcodec.info(stream_file) == latentcodec.info(str(stream_file)) == latentcodec.info(stream)
    expected = as_array(codec.decode(stream))
    for source in (stream_file, str(stream_file)):
        assert np.array_equal(as_array(latentcodec.decode(source)), expected)
        assert np.array_equal(as_array(codec.decode(source)), expected)


def test_a_missing_file_fails_only_its_item(codec, stream, stream_file, tmp_path):
    missing = tmp_path / "missing.lcz"
    for decode_batch in (latentcodec.decode_batch, codec.decode_batch):
        results = decode_batch([stream_file, missing, stream])
        assert [r.ok for r in results] == [True, False, True]
        assert isinstance(results[1].error, InvalidInputError) and "missing.lcz" in str(results[1].error)


def test_unreadable_or_oversized_stream_files_are_refused_clearly(tmp_path, monkeypatch):
    with pytest.raises(InvalidInputError, match=r"cannot read .*nope\.lcz: No such file"):
        latentcodec.info(tmp_path / "nope.lcz")
    with pytest.raises(InvalidInputError, match="cannot read"):
        latentcodec.info(tmp_path)  # a directory
    with pytest.raises(NotAStreamError, match=r"expected a stream \(bytes\) or a path, got int"):
        latentcodec.info(42)
    big = tmp_path / "big.lcz"
    big.write_bytes(bytes(101))
    monkeypatch.setattr(info_module, "MAX_STREAM_BYTES", 100)
    with pytest.raises(CorruptStreamError, match="larger than any latentcodec stream"):
        latentcodec.info(big)


def test_reading_a_header_from_a_path_does_not_import_torch(stream_file):
    code = f"import sys, latentcodec; latentcodec.info({str(stream_file)!r}); assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO.parent)


def test_encode_takes_rgb_tensors_as_the_readme_lists(codec, kodak_crop, stream):
    rgb = torch.from_numpy(np.asarray(kodak_crop).transpose(2, 0, 1).copy())  # [3, H, W] uint8
    assert latentcodec.encode(rgb, model="taef2", **FAST) == stream
    assert codec.encode(rgb.float() / 255, **FAST) == stream
    results = codec.encode_batch([rgb, kodak_crop, rgb.permute(1, 2, 0)], **FAST)
    assert [r.ok for r in results] == [True, True, False]
    assert results[0].value == results[1].value == stream


@pytest.mark.parametrize(
    ("tensor", "hint"),
    [
        (torch.zeros(8, 8, 3, dtype=torch.uint8), "numpy array"),  # channels last
        (torch.zeros(2, 3, 8, 8), "Codec.encode_tensors"),  # a batch
        (torch.zeros(3, 8, 8, dtype=torch.int32), r"\[3, H, W\], uint8 or float"),
    ],
)
def test_tensors_of_another_shape_point_to_the_right_call(codec, tensor, hint):
    with pytest.raises(InvalidImageError, match=hint):
        codec.encode(tensor, **FAST)


def test_other_types_name_what_encode_takes(codec):
    with pytest.raises(InvalidImageError, match="expected a path, encoded bytes, a Pillow image, an array or a tensor"):
        codec.encode(3.5)


@pytest.fixture()
def cpu_only_torch(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


@pytest.mark.parametrize(
    ("device", "message"),
    [
        ("cuda", "device 'cuda' is not available: "),
        ("cuda:7", "device 'cuda:7' is not available: "),
        ("gpu", "'gpu' is not a torch device"),
        ("meta", "device 'meta' is not available: a codec runs on cpu, cuda"),
    ],
)
def test_a_device_this_machine_lacks_is_refused_when_the_codec_is_made(cpu_only_torch, device, message):
    with pytest.raises(DeviceError, match=f"^{message}.*; available: cpu$"):
        Codec("taef2", device=device)


def test_the_cli_names_a_missing_device_in_one_line(cpu_only_torch, kodak_crop, tmp_path, capsys):
    from latentcodec.bindings.cli import main

    kodak_crop.save(tmp_path / "x.png")
    assert main(["--device", "cuda", "encode", str(tmp_path / "x.png"), "-o", str(tmp_path / "x.lcz")]) != 0
    error = capsys.readouterr().err
    assert "device 'cuda' is not available" in error and "Traceback" not in error
    assert not (tmp_path / "x.lcz").exists()
