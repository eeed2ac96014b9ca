"""Batch execution: host threads beside the device, and per-item isolation so one failure costs one item.

Every batch call fills an :class:`Outcomes` (one :class:`Result` slot per item). Host work (reading images,
parsing streams, entropy coding, packing) runs on a thread pool; device work runs batch by batch while the
host finishes earlier batches.
"""

from __future__ import annotations

import contextvars
import os
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, TypeVar

from latentcodec.engine.errors import EngineError, LatentCodecError
from latentcodec.engine.results import Result

T = TypeVar("T")
Progress = Callable[[int], None]
DeviceStage = Callable[[list[int]], list[Result[Future]]]  # batch members -> their host work in flight


def as_error(exc: BaseException) -> LatentCodecError:
    """The library error an item reports for ``exc``."""
    return exc if isinstance(exc, LatentCodecError) else EngineError(f"{type(exc).__name__}: {exc}")


class Outcomes(Generic[T]):
    """One result slot per item; ``progress`` counts every item settled."""

    def __init__(self, size: int, progress: Progress | None = None) -> None:
        self._slots: list[Result[T] | None] = [None] * size
        self._progress = progress

    def settle(self, index: int, result: Result[T]) -> None:
        """The item's final result (counted once)."""
        self._slots[index] = result
        if self._progress:
            self._progress(1)

    def revise(self, index: int, result: Result[T]) -> None:
        """Replace a settled result (not counted again)."""
        self._slots[index] = result

    def __getitem__(self, index: int) -> Result[T]:
        return self._slots[index]  # type: ignore[return-value]

    def results(self) -> list[Result[T]]:
        return self._slots  # type: ignore[return-value]


class HostPool(ThreadPoolExecutor):
    """Host threads that run each task in a copy of its submitter's context, as asyncio's executors do (so a
    :mod:`~latentcodec.engine.stage_timer` recording follows the work)."""

    def submit(self, fn: Callable[..., T], /, *args: object, **kwargs: object) -> Future[T]:
        return super().submit(contextvars.copy_context().run, fn, *args, **kwargs)


class BatchPipeline:
    """Batches of at most ``batch_size`` items through a device stage, with ``host_threads`` beside it."""

    def __init__(self, batch_size: int, host_threads: int | None = None) -> None:
        self.batch_size = max(1, batch_size)
        self.host = HostPool(host_threads or min(32, os.cpu_count() or 1), "latentcodec-host")

    def close(self) -> None:
        self.host.shutdown()

    def on_host(self, fn: Callable[[object], T], items: Sequence, outcomes: Outcomes) -> dict[int, T]:
        """``fn`` over ``items`` on the host threads; library errors settle their items at once."""

        def attempt(item: object) -> T | LatentCodecError:
            try:
                return fn(item)
            except LatentCodecError as exc:
                return exc

        done: dict[int, T] = {}
        for index, outcome in enumerate(self.host.map(attempt, items)):
            if isinstance(outcome, LatentCodecError):
                outcomes.settle(index, Result(error=outcome))
            else:
                done[index] = outcome
        return done

    def run(self, batches: Iterable[list[int]], on_device: DeviceStage, outcomes: Outcomes) -> None:
        """``on_device`` batch by batch while host threads finish earlier batches (at most about two batches in
        flight on the host, which bounds memory on long runs)."""
        in_flight: deque[tuple[int, Future]] = deque()

        def drain(keep: int) -> None:
            while len(in_flight) > keep:
                index, future = in_flight.popleft()
                try:
                    outcomes.settle(index, Result(future.result()))
                except Exception as exc:
                    outcomes.settle(index, Result(error=as_error(exc)))

        for batch in batches:
            for index, outcome in isolated(batch, on_device).items():
                if outcome.ok:
                    in_flight.append((index, outcome.value))
                else:
                    outcomes.settle(index, outcome)
            drain(keep=2 * self.batch_size)
        drain(keep=0)


def isolated(members: list[int], run: Callable[[list[int]], list[Result[T]]]) -> dict[int, Result[T]]:
    """``run`` on a batch; if it fails, on its items one by one, so only a failing item reports an error."""
    try:
        return dict(zip(members, run(members), strict=True))
    except Exception as exc:
        if len(members) == 1:
            return {members[0]: Result(error=as_error(exc))}
        return {index: result for member in members for index, result in isolated([member], run).items()}
