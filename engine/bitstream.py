"""The latentcodec container (``.lcz``), versions 1 to 5: a leaf that imports neither torch nor the models.

All integers little-endian.

======  =========================================================================
bytes   field
======  =========================================================================
4       magic ``\\x89LCZ``
1       version: 1; 2 when a denoiser is named; 3 when the decoder is told the noise level; 4 when the
        latents are not one zstd frame (writers pick the lowest version that holds the stream); 5 for a
        latent stream (latents of a named latent space, not of an image)
1       flags: bit 0 alpha plane present, bit 1 denoiser expected (versions 2-4), bit 2 decoder noise level
        present (versions 3 to 5; always set in 3), bit 3 latent stream (always set in 5, only there); others
        zero
1       colour kind of the decoded image (0 L, 1 LA, 2 RGB, 3 RGBA)
1       coding mode (0 scalar8, 1 uniform, 2 palette)
4+4     width, height of the decoded image (version 5: the latent grid times the space's downsampling)
4+4     coded width, height: the image size the encoder saw (before padding; version 5: width, height again)
        versions 4 and 5:
1         entropy method of the latent symbols: 1 context, 2 passes_v1, 3 passes (0, zstd: version 5 only;
          zstd image streams are written as versions 1-3)
1+n     model id (ASCII, n <= 64); version 5: the latent space id (colour kind RGB, what a decoder renders)
8       model fingerprint (hash of the weights); not in version 5, whose latents any decoder of the space renders
        versions 3 to 5, when bit 2 is set:
2         noise level the decoder is conditioned on: RMS quantization error per latent (float16)
        versions 2 to 4, when bit 1 is set: the denoiser the encoder expects before the decoder
1+n       denoiser id (ASCII, n <= 64)
8         denoiser fingerprint
2         noise level: RMS quantization error per latent (float16), the denoiser's conditioning
4+n     mode parameters
4+n     latent symbols: one zstd frame of channel-major planes (versions 1-3), or the entropy method's payload
4+n     alpha plane: one zstd frame of ``height x width`` bytes (empty when absent)
4       CRC-32 of every byte before it
======  =========================================================================

Readers accept every version; a version-1 stream never names a denoiser, and only versions 3 to 5 carry the
decoder's noise level (for models whose decoder takes it, such as ``taef2-q``). The latent grid is
``ceil(coded / downsample)`` of the model; the decoder crops the decoded image to the coded size and resizes
it to the decoded size when the two differ.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, replace

from latentcodec.engine.errors import (
    ChecksumError,
    CorruptStreamError,
    NotAStreamError,
    TruncatedStreamError,
    UnsupportedVersionError,
)
from latentcodec.engine.format import FINGERPRINT_BYTES, MAX_ID, CodingMode, ColorKind, EntropyMethod, size_supported
from latentcodec.engine.stream_reader import F16 as _F16
from latentcodec.engine.stream_reader import U8 as _U8
from latentcodec.engine.stream_reader import U32 as _U32
from latentcodec.engine.stream_reader import Reader

MAGIC = b"\x89LCZ"
VERSION = 5  # the newest version this module reads and writes
VERSIONS = (1, 2, 3, 4, 5)
LATENT_VERSION = 5  # latent streams, and only they
FLAG_ALPHA = 1
FLAG_DENOISE = 2
FLAG_NOISE = 4
FLAG_LATENTS = 8
_KNOWN_FLAGS = FLAG_ALPHA | FLAG_DENOISE | FLAG_NOISE | FLAG_LATENTS

_FIXED = struct.Struct("<4sBBBBIIII")


@dataclass(frozen=True)
class DenoiserRef:
    """The denoiser a stream was encoded for, and the noise level it is conditioned on."""

    denoiser_id: str
    fingerprint: bytes
    noise_level: float


@dataclass(frozen=True)
class Header:
    """Everything in a stream but its payloads."""

    kind: ColorKind
    mode: CodingMode
    width: int
    height: int
    coded_width: int
    coded_height: int
    model_id: str
    fingerprint: bytes
    has_alpha: bool = False
    denoiser: DenoiserRef | None = None
    noise_level: float | None = None  # what a conditioned decoder is told (versions 3 to 5)
    entropy: EntropyMethod = EntropyMethod.ZSTD  # how the latent symbols are coded (version 4 when not zstd)
    latent_space: str | None = None  # a latent stream's space (version 5: model_id "", fingerprint b"")

    @property
    def flags(self) -> int:
        noise = FLAG_NOISE if self.noise_level is not None else 0
        latents = FLAG_LATENTS if self.latent_space is not None else 0
        return (FLAG_ALPHA if self.has_alpha else 0) | (FLAG_DENOISE if self.denoiser else 0) | noise | latents

    @property
    def version(self) -> int:
        """The lowest version that holds this header."""
        if self.latent_space is not None:
            return LATENT_VERSION
        zstd = self.entropy == EntropyMethod.ZSTD
        return 4 if not zstd else 3 if self.noise_level is not None else 2 if self.denoiser else 1

    @property
    def denoise(self) -> bool:
        return self.denoiser is not None

    def latent_size(self, downsample: int) -> tuple[int, int]:
        """(height, width) of the latent grid."""
        return -(-self.coded_height // downsample), -(-self.coded_width // downsample)


@dataclass(frozen=True)
class Stream:
    """A parsed container: header, mode parameters and the still-compressed payloads."""

    header: Header
    params: bytes
    latents: bytes
    alpha: bytes = b""


def _check_size(width: int, height: int, what: str) -> None:
    if not size_supported(width, height):
        raise CorruptStreamError(f"{what} {width}x{height} outside the supported range")


def _identity(name: str, fingerprint: bytes | None) -> list[bytes]:
    """A length-prefixed id and its fingerprint (None: an id alone, a latent space's)."""
    encoded = name.encode("ascii")
    if len(encoded) > MAX_ID or (fingerprint is not None and len(fingerprint) != FINGERPRINT_BYTES):
        raise ValueError(f"id {name!r} too long or fingerprint of the wrong size")
    return [_U8.pack(len(encoded)), encoded, fingerprint or b""]


def pack(stream: Stream) -> bytes:
    """Serialize a stream (checksum appended)."""
    h = stream.header
    if h.latent_space is not None and (h.has_alpha or h.denoiser or h.kind != ColorKind.RGB or not h.latent_space):
        raise ValueError("a latent stream names a latent space and holds no alpha plane nor denoiser entry")
    parts = [
        _FIXED.pack(MAGIC, h.version, h.flags, h.kind, h.mode, h.width, h.height, h.coded_width, h.coded_height),
    ]
    if h.version >= 4:
        parts.append(_U8.pack(h.entropy))
    space = h.latent_space
    parts += _identity(space, None) if space is not None else _identity(h.model_id, h.fingerprint)
    if h.noise_level is not None:
        parts.append(_F16.pack(h.noise_level))
    if h.denoiser:
        parts += [*_identity(h.denoiser.denoiser_id, h.denoiser.fingerprint), _F16.pack(h.denoiser.noise_level)]
    for section in (stream.params, stream.latents, stream.alpha):
        parts += [_U32.pack(len(section)), section]
    body = b"".join(parts)
    return body + _U32.pack(zlib.crc32(body))


def unpack(data: bytes) -> Stream:
    """Parse and validate a stream; raises a CorruptStreamError subclass for anything malformed."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise NotAStreamError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < len(MAGIC) or data[: len(MAGIC)] != MAGIC:
        raise NotAStreamError("not a latentcodec stream (bad magic)")
    if len(data) < _FIXED.size + _U32.size:
        raise TruncatedStreamError(f"stream of {len(data)} bytes is shorter than its header")
    version = data[len(MAGIC)]
    if version not in VERSIONS:
        raise UnsupportedVersionError(f"bitstream version {version} is not supported (this reads 1 to {VERSION})")
    body, (crc,) = data[:-4], _U32.unpack(data[-4:])
    if zlib.crc32(body) != crc:
        raise ChecksumError("checksum mismatch: the stream is corrupt or truncated")
    reader = Reader(body, len(body))
    _, version, flags, kind, mode, width, height, coded_w, coded_h = reader.unpack(_FIXED)
    noise_flag_allowed = bool(flags & FLAG_NOISE) == (version == 3) or version >= 4
    latent_flag_allowed = bool(flags & FLAG_LATENTS) == (version == LATENT_VERSION)
    if flags & ~_KNOWN_FLAGS or (version == 1 and flags & FLAG_DENOISE) or not noise_flag_allowed:
        raise CorruptStreamError(f"unknown flags {flags:#x} for version {version}")
    if not latent_flag_allowed or (version == LATENT_VERSION and flags & (FLAG_ALPHA | FLAG_DENOISE)):
        raise CorruptStreamError(f"unknown flags {flags:#x} for version {version}")
    try:
        kind, mode = ColorKind(kind), CodingMode(mode)
        method = EntropyMethod(reader.unpack(_U8)[0]) if version >= 4 else EntropyMethod.ZSTD
    except ValueError as exc:
        raise CorruptStreamError(str(exc)) from None
    if version == 4 and method == EntropyMethod.ZSTD:
        raise CorruptStreamError("a version 4 stream of zstd latents (writers use versions 1 to 3)")
    _check_size(width, height, "image size")
    _check_size(coded_w, coded_h, "coded size")
    if coded_w > width or coded_h > height:  # writers only ever code an image at its size or smaller
        raise CorruptStreamError(f"coded size {coded_w}x{coded_h} larger than the image size {width}x{height}")
    latent_space = None
    if version == LATENT_VERSION:
        latent_space, model_id, fingerprint = reader.name("latent space"), "", b""
        if not latent_space or kind != ColorKind.RGB or (coded_w, coded_h) != (width, height):
            raise CorruptStreamError("a latent stream names a latent space, decodes to RGB and is not resized")
    else:
        model_id, fingerprint = reader.identity("model")
    decoder_noise = reader.level("decoder noise level") if flags & FLAG_NOISE else None
    denoiser = None
    if flags & FLAG_DENOISE:
        denoiser_id, denoiser_fingerprint = reader.identity("denoiser")
        if not denoiser_id:
            raise CorruptStreamError("empty denoiser id")
        denoiser = DenoiserRef(denoiser_id, denoiser_fingerprint, reader.level("denoiser entry: noise level"))
    elif version == 2:
        raise CorruptStreamError(f"a version {version} stream without a denoiser (writers use version 1)")
    params, latents, alpha = reader.section(), reader.section(), reader.section()
    if reader.pos != len(body):
        raise CorruptStreamError(f"{len(body) - reader.pos} unexpected bytes after the last section")
    if bool(flags & FLAG_ALPHA) != bool(alpha) or bool(flags & FLAG_ALPHA) != kind.has_alpha:
        raise CorruptStreamError("alpha flag, colour kind and alpha section disagree")
    has_alpha = bool(flags & FLAG_ALPHA)
    header = Header(
        kind, mode, width, height, coded_w, coded_h, model_id, fingerprint, has_alpha, denoiser, decoder_noise, method
    )
    return Stream(replace(header, latent_space=latent_space), params, latents, alpha)
