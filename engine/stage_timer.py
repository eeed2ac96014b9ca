"""Optional per-stage timing of the engine's work: off (and next to free) unless a recorder is active.

The engine marks its stages with ``with stage("entropy coding"):`` or ``@staged("quantize")``. Inside
:func:`recording`, each stage adds its host CPU time (``time.thread_time``: the CPU of the thread that ran it),
its wall time and, with a :class:`DeviceClock` (CUDA events: :class:`CudaClock`), its device time to the
recorder. Times are exclusive: a stage nested in another on the same thread is taken out of the outer one, so a
recorder's totals add up. Stages inside a *scope* stage (a search that runs other stages for its own ends) are
named under it (``"strength search / decoder network"``); others by their own name. The recorder is held in a
context variable, so it follows work into the host threads (the pipeline's pool runs each task in its
submitter's context) and concurrent calls in other contexts record nothing into it. With no recorder active,
:func:`stage` returns one shared do-nothing context manager and :func:`staged` functions only look up the
context variable.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

F = TypeVar("F", bound=Callable[..., Any])
SEPARATOR = " / "
OFF = contextlib.nullcontext()  # what stage() returns while nothing records


class DeviceClock(Protocol):
    """Marks points on the device's timeline; ``elapsed_ms`` (called once the recording ends) measures spans."""

    def mark(self) -> object | None: ...

    def elapsed_ms(self, start: object, end: object) -> float: ...


class CudaClock:
    """CUDA events on the current stream (none while a stream is being captured into a graph)."""

    def mark(self) -> object | None:
        import torch

        if torch.cuda.is_current_stream_capturing():
            return None
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def elapsed_ms(self, start: object, end: object) -> float:
        end.synchronize()  # type: ignore[attr-defined]
        return float(start.elapsed_time(end))  # type: ignore[attr-defined]


@dataclass
class StageTotal:
    """One stage's exclusive totals: calls, host CPU and wall seconds, device seconds (None: not measured)."""

    calls: int = 0
    cpu_s: float = 0.0
    wall_s: float = 0.0
    device_s: float | None = None


class StageRecorder:
    """What the stages of one recording added up to (thread-safe)."""

    def __init__(self, device_clock: DeviceClock | None = None) -> None:
        self.device_clock = device_clock
        self._totals: dict[tuple[str, ...], StageTotal] = {}
        self._spans: list[tuple[tuple[str, ...], tuple[object, object], list[tuple[object, object]]]] = []
        self._lock = threading.Lock()

    def add(self, path: tuple[str, ...], cpu_s: float, wall_s: float, spans=None) -> None:
        with self._lock:
            total = self._totals.setdefault(path, StageTotal())
            total.calls += 1
            total.cpu_s += cpu_s
            total.wall_s += wall_s
            if spans is not None:
                self._spans.append((path, *spans))

    def totals(self) -> dict[str, StageTotal]:
        """Totals per stage path (``"outer / inner"``), in the order stages first finished."""
        with self._lock:
            spans, self._spans = self._spans, []
            for path, own, children in spans:  # device spans resolve now: events complete asynchronously
                ms = self._elapsed(own) - sum(self._elapsed(child) for child in children)
                total = self._totals[path]
                total.device_s = (total.device_s or 0.0) + ms / 1000
            return {SEPARATOR.join(path): total for path, total in self._totals.items()}

    def _elapsed(self, span: tuple[object, object]) -> float:
        return self.device_clock.elapsed_ms(*span)  # type: ignore[union-attr]


class _Stage:
    """One running stage: times itself and takes same-thread nested stages out of its own time."""

    def __init__(self, recorder: StageRecorder, name: str, device: bool, scope: bool) -> None:
        self.recorder, self.name, self.scope = recorder, name, scope
        self.clock = recorder.device_clock if device else None

    def __enter__(self) -> _Stage:
        self.parent = _CURRENT.get()
        outer = self.parent.scope_path if self.parent else ()
        self.path = outer if outer[-1:] == (self.name,) else (*outer, self.name)  # a scope inside itself: one row
        self.scope_path = self.path if self.scope else outer
        self.thread = threading.get_ident()
        self.child_cpu = self.child_wall = 0.0
        self.child_spans: list[tuple[object, object]] = []
        self.token = _CURRENT.set(self)
        self.start = self.clock.mark() if self.clock else None
        self.wall, self.cpu = time.perf_counter(), time.thread_time()
        return self

    def __exit__(self, *_exc: object) -> None:
        cpu, wall = time.thread_time() - self.cpu, time.perf_counter() - self.wall
        end = self.clock.mark() if self.clock and self.start is not None else None
        try:
            _CURRENT.reset(self.token)
        except (ValueError, RuntimeError):  # left in another context (a generator resumed elsewhere): carry on
            _CURRENT.set(self.parent)
        span = (self.start, end) if end is not None else None
        parent = self.parent
        if parent is not None and parent.thread == self.thread:
            parent.child_cpu, parent.child_wall = parent.child_cpu + cpu, parent.child_wall + wall
            if span is not None:
                parent.child_spans.append(span)
        spans = (span, self.child_spans) if span is not None else None
        self.recorder.add(self.path, cpu - self.child_cpu, wall - self.child_wall, spans)


_RECORDER: ContextVar[StageRecorder | None] = ContextVar("latentcodec_stage_recorder", default=None)
_CURRENT: ContextVar[_Stage | None] = ContextVar("latentcodec_stage", default=None)


def stage(name: str, device: bool = False, scope: bool = False) -> contextlib.AbstractContextManager:
    """Time the block as stage ``name`` when a recorder is active. ``device``: the block queues device work, so a
    device clock measures it too; ``scope``: stages inside it are named under it."""
    recorder = _RECORDER.get()
    return OFF if recorder is None else _Stage(recorder, name, device, scope)


def staged(name: str, device: bool = False, scope: bool = False) -> Callable[[F], F]:
    """Decorator: every call of the function is stage ``name`` (see :func:`stage`)."""

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            recorder = _RECORDER.get()
            if recorder is None:
                return fn(*args, **kwargs)
            with _Stage(recorder, name, device, scope):
                return fn(*args, **kwargs)

        return timed  # type: ignore[return-value]

    return decorate


@contextlib.contextmanager
def recording(device_clock: DeviceClock | None = None) -> Iterator[StageRecorder]:
    """Record the stages run in this context (and the host tasks it submits) until the block ends."""
    recorder = StageRecorder(device_clock)
    token = _RECORDER.set(recorder)
    try:
        yield recorder
    finally:
        _RECORDER.reset(token)
