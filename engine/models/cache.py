"""A thread-safe cache of loaded networks, keyed by id, source, device, dtype and memory layout."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

import torch

T = TypeVar("T")


class LoadedCache(Generic[T]):
    """Each network is loaded once per placement; ``source_env`` names the variable that overrides its source."""

    def __init__(self) -> None:
        self._items: dict[tuple, T] = {}
        self._lock = threading.Lock()

    def get(
        self,
        name: str,
        load: Callable[[str | None], T],
        *,
        source: str | None,
        source_env: str | None,
        device: str | torch.device,
        dtype: torch.dtype,
        memory_format: torch.memory_format,
    ) -> T:
        if source is None and source_env:
            source = os.environ.get(source_env)
        key = (name, source, str(torch.device(device)), dtype, memory_format)
        with self._lock:
            if key not in self._items:
                self._items[key] = load(source)
            return self._items[key]

    def forget(self, name: str) -> None:
        """Drop every loaded copy of ``name``."""
        with self._lock:
            for key in [k for k in self._items if k[0] == name]:
                del self._items[key]
