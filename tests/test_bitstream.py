"""Container round trips and fuzzing: corrupt input always raises the library's own exceptions."""

import struct
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import latentcodec
from latentcodec.engine import bitstream
from latentcodec.engine.bitstream import Header, Stream
from latentcodec.engine.errors import (
    ChecksumError,
    CorruptStreamError,
    LatentCodecError,
    NotAStreamError,
    TruncatedStreamError,
    UnsupportedVersionError,
)
from latentcodec.engine.format import CodingMode, ColorKind, EntropyMethod

FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _header(**changes) -> Header:
    fields = dict(
        kind=ColorKind.RGB,
        mode=CodingMode.UNIFORM,
        width=40,
        height=24,
        coded_width=40,
        coded_height=24,
        model_id="taef2",
        fingerprint=b"12345678",
    )
    return Header(**{**fields, **changes})


def test_pack_unpack_round_trip():
    stream = Stream(_header(kind=ColorKind.LA, has_alpha=True), b"pp", b"latent", b"alpha")
    data = bitstream.pack(stream)
    assert data.startswith(bitstream.MAGIC)
    assert bitstream.unpack(data) == stream


def _reseal(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


def test_specific_errors():
    data = bitstream.pack(Stream(_header(), b"p", b"l"))
    with pytest.raises(NotAStreamError):
        bitstream.unpack(b"\x89PNG\r\n\x1a\n" + data[8:])
    with pytest.raises(NotAStreamError):
        bitstream.unpack("not bytes")
    with pytest.raises(TruncatedStreamError):
        bitstream.unpack(data[:10])
    with pytest.raises(ChecksumError):
        bitstream.unpack(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(UnsupportedVersionError):
        bitstream.unpack(data[:4] + bytes([bitstream.VERSION + 1]) + data[5:])
    with pytest.raises(CorruptStreamError, match="outside the supported range"):
        huge = bitstream.pack(Stream(_header(width=70000, coded_width=70000), b"p", b"l"))
        bitstream.unpack(huge)
    with pytest.raises(CorruptStreamError, match="unexpected bytes"):
        bitstream.unpack(_reseal(data[:-4] + b"extra"))


@pytest.fixture(scope="module")
def small_streams(kodak_crop):
    crop = kodak_crop.crop((0, 0, 24, 16))
    rgba = crop.convert("RGBA")
    streams = [latentcodec.encode(crop, mode=mode) for mode in ("scalar8", "uniform", "palette")]
    streams += [latentcodec.encode(rgba, mode="uniform"), latentcodec.encode(crop, entropy="zstd")]
    assert [s[4] == 4 for s in streams] == [False, True, False, True, False]  # context-coded: version 4
    return streams


@FUZZ
@given(data=st.data())
def test_mutated_streams_raise_library_errors(small_streams, data):
    """Flipped, deleted, inserted bytes and truncations: each is detected and reported as a LatentCodecError."""
    stream = bytearray(data.draw(st.sampled_from(small_streams)))
    kind = data.draw(st.sampled_from(["flip", "truncate", "insert", "delete", "zero-run"]))
    pos = data.draw(st.integers(0, len(stream) - 1))
    if kind == "flip":
        stream[pos] ^= data.draw(st.integers(1, 255))
    elif kind == "truncate":
        del stream[pos:]
    elif kind == "insert":
        stream[pos:pos] = data.draw(st.binary(min_size=1, max_size=16))
    elif kind == "delete":
        del stream[pos : pos + data.draw(st.integers(1, 16))]
    else:
        end = min(len(stream), pos + data.draw(st.integers(1, 32)))
        if stream[pos:end] == bytes(end - pos):
            stream[pos] = 1
        else:
            stream[pos:end] = bytes(end - pos)
    with pytest.raises(LatentCodecError):
        latentcodec.decode(bytes(stream))


@FUZZ
@given(data=st.data())
def test_resealed_mutations_never_crash(small_streams, data):
    """Mutations with a valid checksum reach parser and decoder: they fail cleanly or decode to the declared size."""
    original = data.draw(st.sampled_from(small_streams))
    body = bytearray(original[:-4])
    for _ in range(data.draw(st.integers(1, 4))):
        body[data.draw(st.integers(0, len(body) - 1))] = data.draw(st.integers(0, 255))
    mutated = _reseal(bytes(body))
    try:
        header = bitstream.unpack(mutated).header
        image = latentcodec.decode(mutated)
    except LatentCodecError:
        return
    assert image.size == (header.width, header.height)
    assert image.mode == header.kind.pil_mode


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_raise_library_errors(blob):
    with pytest.raises(LatentCodecError):
        latentcodec.decode(blob)
    with pytest.raises(LatentCodecError):
        latentcodec.decode(bitstream.MAGIC + blob)


def test_denoiser_entry_round_trips_in_version_2():
    ref = bitstream.DenoiserRef("latent-denoiser", b"abcdefgh", 0.375)  # exact in float16
    stream = Stream(_header(denoiser=ref), b"pp", b"latent")
    data = bitstream.pack(stream)
    assert data[4] == 2 and data[5] == bitstream.FLAG_DENOISE
    assert bitstream.unpack(data) == stream
    plain = bitstream.pack(Stream(_header(), b"pp", b"latent"))
    assert plain[4] == 1  # streams without a denoiser keep version 1, byte for byte


def test_version_and_denoise_flag_must_agree():
    v1 = bitstream.pack(Stream(_header(), b"p", b"l"))
    with pytest.raises(CorruptStreamError, match="unknown flags"):
        bitstream.unpack(_reseal(v1[:5] + bytes([bitstream.FLAG_DENOISE]) + v1[6:-4]))
    with pytest.raises(CorruptStreamError, match="without a denoiser"):
        bitstream.unpack(_reseal(v1[:4] + b"\x02" + v1[5:-4]))
    v2 = bitstream.pack(Stream(_header(denoiser=bitstream.DenoiserRef("d", b"12345678", 0.5)), b"p", b"l"))
    nan = v2.replace(struct.pack("<e", 0.5), struct.pack("<e", float("nan")))
    with pytest.raises(CorruptStreamError, match="bad denoiser entry"):
        bitstream.unpack(_reseal(nan[:-4]))


def test_version_3_carries_the_decoders_noise_level():
    plain = bitstream.pack(Stream(_header(), b"p", b"l"))
    conditioned = bitstream.pack(Stream(_header(noise_level=0.75), b"p", b"l"))
    assert conditioned[4] == 3 and plain[4] == 1 and len(conditioned) == len(plain) + 2
    assert bitstream.unpack(conditioned).header.noise_level == 0.75
    assert bitstream.unpack(plain).header.noise_level is None
    both = _header(noise_level=0.5, denoiser=bitstream.DenoiserRef("d", b"12345678", 0.25))
    assert bitstream.unpack(bitstream.pack(Stream(both, b"p", b"l"))).header == both
    with pytest.raises(CorruptStreamError, match="unknown flags"):  # a version 3 stream must carry the level
        bitstream.unpack(_reseal(plain[:4] + b"\x03" + plain[5:-4]))
    with pytest.raises(CorruptStreamError, match="unknown flags"):  # and only version 3 may
        bitstream.unpack(_reseal(conditioned[:4] + b"\x02" + conditioned[5:-4]))


def test_version_4_names_the_entropy_method():
    plain = bitstream.pack(Stream(_header(), b"p", b"l"))
    context = _header(entropy=EntropyMethod.CONTEXT)
    data = bitstream.pack(Stream(context, b"p", b"l"))
    assert data[4] == 4 and data[5] == 0 and len(data) == len(plain) + 1
    assert bitstream.unpack(data).header == context
    for extra in ({"noise_level": 0.5}, {"denoiser": bitstream.DenoiserRef("d", b"12345678", 0.25)}):
        header = _header(entropy=EntropyMethod.CONTEXT, **extra)
        assert bitstream.unpack(bitstream.pack(Stream(header, b"p", b"l"))).header == header
    method_at = bitstream._FIXED.size
    with pytest.raises(CorruptStreamError, match="zstd latents"):  # zstd streams are written as versions 1-3
        bitstream.unpack(_reseal(data[:method_at] + b"\x00" + data[method_at + 1 : -4]))
    with pytest.raises(CorruptStreamError, match="EntropyMethod"):
        bitstream.unpack(_reseal(data[:method_at] + b"\x07" + data[method_at + 1 : -4]))
    assert bitstream.unpack(plain).header.entropy == EntropyMethod.ZSTD
