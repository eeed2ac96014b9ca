"""One registry pattern for every kind of network the engine loads (autoencoders, denoisers).

A :class:`Registry` maps ids to entries (what a network is and how to load it) and keeps each loaded network
once per id, source and placement (device, dtype, memory layout). An entry's ``source_env`` names the
environment variable that overrides where its weights come from.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import torch

from latentcodec.engine.errors import ModelError, UnknownModelError


@dataclass(frozen=True)
class Placement:
    """Where and how a network runs."""

    device: torch.device | str = "cpu"
    dtype: torch.dtype = torch.float32
    memory_format: torch.memory_format = torch.contiguous_format

    def key(self) -> tuple:
        return str(torch.device(self.device)), self.dtype, self.memory_format


class Entry(Protocol):
    @property
    def source_env(self) -> str | None: ...


E = TypeVar("E", bound=Entry)
T = TypeVar("T")


class Registry(Generic[E, T]):
    """Ids -> entries of one ``kind`` ("model", "denoiser"), and the networks loaded from them."""

    def __init__(self, kind: str, entries: dict[str, E] | None = None) -> None:
        self.kind = kind
        self._entries: dict[str, E] = dict(entries or {})
        self._loaded: dict[tuple, T | ModelError] = {}
        self._lock = threading.Lock()

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __getitem__(self, name: str) -> E:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownModelError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}") from None

    def register(self, name: str, entry: E) -> None:
        """Add or replace ``name`` (its loaded copies are forgotten)."""
        self._entries[name] = entry
        self.forget(name)

    def load(self, name: str, build: Callable[[E, str | None], T], placement: Placement, source: str | None) -> T:
        """``build(entry, source)`` for ``name`` at ``placement``, once per source and placement. ``source``
        defaults to the entry's environment variable (when set). A network that cannot be loaded (ModelError)
        stays unloadable for this process: asking again raises the same error at once."""
        entry = self[name]
        if source is None and entry.source_env:
            source = os.environ.get(entry.source_env)
        key = (name, source, *placement.key())
        with self._lock:
            if key not in self._loaded:
                try:
                    self._loaded[key] = build(entry, source)
                except ModelError as exc:
                    self._loaded[key] = exc
            loaded = self._loaded[key]
        if isinstance(loaded, ModelError):
            raise loaded.with_traceback(None)  # the same error each time, without piling up tracebacks
        return loaded

    def forget(self, name: str) -> None:
        """Drop every loaded copy of ``name``."""
        with self._lock:
            for key in [k for k in self._loaded if k[0] == name]:
                del self._loaded[key]
