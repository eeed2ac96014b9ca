"""The zstd entropy stage: byte planes in, one checksummed zstd frame out, and back with bounded memory."""

from __future__ import annotations

import zstandard

from latentcodec.engine.errors import CorruptStreamError

DEFAULT_LEVEL = 19


def compress(data: bytes, level: int = DEFAULT_LEVEL) -> bytes:
    """One zstd frame with its content size and checksum."""
    params = zstandard.ZstdCompressor(level=level, write_checksum=True, write_content_size=True)
    return params.compress(data)


def decompress(frame: bytes, expected_size: int) -> bytes:
    """Decompress a frame that must hold exactly ``expected_size`` bytes; never allocates more than that."""
    try:
        declared = zstandard.frame_content_size(frame)
    except zstandard.ZstdError as exc:
        raise CorruptStreamError(f"bad zstd frame: {exc}") from exc
    if declared != expected_size:
        raise CorruptStreamError(f"zstd frame declares {declared} bytes, header implies {expected_size}")
    try:
        data = zstandard.ZstdDecompressor().decompress(frame, max_output_size=expected_size)
    except zstandard.ZstdError as exc:
        raise CorruptStreamError(f"bad zstd frame: {exc}") from exc
    if len(data) != expected_size:
        raise CorruptStreamError(f"zstd frame holds {len(data)} bytes, expected {expected_size}")
    return data
