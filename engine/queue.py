"""A request queue in front of a Codec: single requests in, batches to the device, futures out.

A service that receives images one at a time submits each to a :class:`RequestQueue`; one worker thread
gathers requests into batches and runs them through the codec's batch API. A batch starts when it holds
``max_batch`` requests or when its oldest request has waited ``max_latency_ms``, so latency stays bounded
under light load and batches fill under heavy load.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

from PIL import Image

from latentcodec.engine.codec import Codec
from latentcodec.engine.errors import BusyError, EngineError
from latentcodec.engine.intake import ImageInput
from latentcodec.engine.options import EncodeOptions
from latentcodec.engine.pipeline import as_error


@dataclass
class _Request:
    kind: str  # "encode" or "decode"
    item: object
    options: EncodeOptions | tuple[bool, int | None]  # encode: the validated options; decode: (denoise, max_pixels)
    future: Future = field(default_factory=Future)


_CLOSE = object()


class RequestQueue:
    """Batches single encode/decode requests for a :class:`Codec`.

    ``max_batch`` defaults to the codec's batch size. At most ``max_pending`` requests wait or run at once; past
    that, submitting raises :class:`BusyError`. Whatever a batch raises ends as the error of that batch's
    futures: the worker outlives every request (:attr:`alive` says whether it runs). ``on_batch(kind, size)``
    hears of each batch the codec runs (a service's metrics); :attr:`pending` counts the requests waiting or
    running. Use as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        codec: Codec,
        *,
        max_batch: int | None = None,
        max_latency_ms: float = 5.0,
        max_pending: int = 1024,
        on_batch: Callable[[str, int], None] | None = None,
    ) -> None:
        if max_latency_ms < 0:
            raise ValueError(f"max_latency_ms must be >= 0, got {max_latency_ms}")
        self.codec = codec
        self.max_batch = max(1, max_batch or codec.batch_size)
        self.max_latency = max_latency_ms / 1000
        self._requests: queue.SimpleQueue = queue.SimpleQueue()
        self._slots = threading.BoundedSemaphore(max(1, max_pending))
        self._pending, self._count_lock = 0, threading.Lock()
        self._on_batch = on_batch
        self._closed = False
        self._worker = threading.Thread(target=self._serve, name="latentcodec-queue", daemon=True)
        self._worker.start()

    def encode(self, image: ImageInput, *, options: EncodeOptions | None = None, **overrides) -> Future[bytes]:
        """Queue an image; the future resolves to its stream or raises its error. Requests with equal options
        share batches."""
        validated = EncodeOptions.resolve(options, overrides)  # bad options fail here, in the caller's thread,
        self.codec.encoder.plan(validated)  # and so does a denoiser of another latent space
        return self._submit(_Request("encode", image, validated))

    def decode(self, data: bytes, *, denoise: bool = True, max_pixels: int | None = None) -> Future[Image.Image]:
        """Queue a stream; the future resolves to the decoded Pillow image or raises its error (streams declaring
        more than ``max_pixels`` pixels fail before any work)."""
        return self._submit(_Request("decode", data, (bool(denoise), max_pixels)))

    async def encode_async(self, image: ImageInput, *, options: EncodeOptions | None = None, **overrides) -> bytes:
        return await asyncio.wrap_future(self.encode(image, options=options, **overrides))

    async def decode_async(self, data: bytes, *, denoise: bool = True, max_pixels: int | None = None) -> Image.Image:
        return await asyncio.wrap_future(self.decode(data, denoise=denoise, max_pixels=max_pixels))

    @property
    def alive(self) -> bool:
        """Whether the worker is serving requests."""
        return not self._closed and self._worker.is_alive()

    @property
    def pending(self) -> int:
        """Requests waiting in the queue or running through the codec."""
        return self._pending

    def _submit(self, request: _Request) -> Future:
        if not self.alive:
            raise EngineError("the request queue is closed")
        if not self._slots.acquire(blocking=False):
            raise BusyError("too many requests in flight; try again later")
        self._count(1)
        request.future.add_done_callback(self._release)
        self._requests.put(request)
        return request.future

    def _count(self, change: int) -> None:
        with self._count_lock:
            self._pending += change

    def _release(self, _future: Future) -> None:
        self._count(-1)
        self._slots.release()

    def close(self) -> None:
        """Finish every queued request, then stop the worker."""
        if not self._closed:
            self._closed = True
            self._requests.put(_CLOSE)
            self._worker.join()

    def __enter__(self) -> RequestQueue:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _serve(self) -> None:
        while True:
            first = self._requests.get()
            if first is _CLOSE:
                return
            batch, closing = self._gather(first)
            self._run(batch)
            if closing:
                return

    def _gather(self, first: _Request) -> tuple[list[_Request], bool]:
        """Requests until the batch is full or the first one's latency budget is spent."""
        batch = [first]
        deadline = time.monotonic() + self.max_latency
        while len(batch) < self.max_batch:
            try:
                request = self._requests.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if request is _CLOSE:
                return batch, True
            batch.append(request)
        return batch, False

    def _run(self, batch: list[_Request]) -> None:
        groups: dict[tuple, list[_Request]] = defaultdict(list)
        for request in batch:
            groups[request.kind, request.options].append(request)
        for (kind, options), requests in groups.items():
            if self._on_batch is not None:
                with contextlib.suppress(Exception):  # an observer never fails the batch or stops the worker
                    self._on_batch(kind, len(requests))
            try:
                self._answer(kind, options, requests)
            except Exception as exc:  # whatever the batch raised ends as its requests' error, never the worker's
                for request in requests:
                    if not request.future.done():
                        request.future.set_exception(as_error(exc))

    def _answer(self, kind: str, options, requests: list[_Request]) -> None:
        items = [r.item for r in requests]
        if kind == "encode":
            results = self.codec.encode_batch(items, options=options)
        else:
            denoise, max_pixels = options
            results = self.codec.decode_batch(items, denoise=denoise, max_pixels=max_pixels)
        for request, result in zip(requests, results, strict=True):
            if request.future.done():  # cancelled by its caller
                continue
            if result.ok:
                request.future.set_result(result.value)
            else:
                request.future.set_exception(result.error)
