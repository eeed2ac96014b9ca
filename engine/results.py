"""Per-item results of the batch APIs: one failure never costs the other items."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from latentcodec.engine.errors import LatentCodecError

T = TypeVar("T")


@dataclass(frozen=True)
class Result(Generic[T]):
    """Either a value or the error that item raised."""

    value: T | None = None
    error: LatentCodecError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def unwrap(self) -> T:
        """The value, or raise the item's error."""
        if self.error is not None:
            raise self.error
        return self.value  # type: ignore[return-value]
