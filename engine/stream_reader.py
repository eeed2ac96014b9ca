"""Reading a stream's fields: bounded takes that raise the container's errors (a leaf, like the container)."""

from __future__ import annotations

import math
import struct

from latentcodec.engine.errors import CorruptStreamError, TruncatedStreamError
from latentcodec.engine.format import FINGERPRINT_BYTES, MAX_ID

U8 = struct.Struct("<B")
U32 = struct.Struct("<I")
F16 = struct.Struct("<e")


class Reader:
    """A cursor over ``data[:end]``; reading past ``end`` raises TruncatedStreamError."""

    def __init__(self, data: bytes, end: int) -> None:
        self.data, self.pos, self.end = data, 0, end

    def take(self, n: int) -> bytes:
        if self.pos + n > self.end:
            raise TruncatedStreamError(f"stream ends inside a field at byte {self.pos}")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def unpack(self, fmt: struct.Struct) -> tuple:
        return fmt.unpack(self.take(fmt.size))

    def section(self) -> bytes:
        (length,) = self.unpack(U32)
        return self.take(length)

    def level(self, what: str) -> float:
        """A float16 noise level (finite, not negative)."""
        (level,) = self.unpack(F16)
        if not (math.isfinite(level) and level >= 0):
            raise CorruptStreamError(f"bad {what} {level}")
        return level

    def name(self, what: str) -> str:
        """A length-prefixed ASCII id of at most MAX_ID bytes."""
        (length,) = self.unpack(U8)
        if length > MAX_ID:
            raise CorruptStreamError(f"{what} id too long")
        try:
            return self.take(length).decode("ascii")
        except UnicodeDecodeError:
            raise CorruptStreamError(f"{what} id is not ASCII") from None

    def identity(self, what: str) -> tuple[str, bytes]:
        """An id and the fingerprint after it."""
        return self.name(what), self.take(FINGERPRINT_BYTES)
