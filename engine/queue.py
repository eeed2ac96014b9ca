"""A request queue in front of a Codec: single requests in, batches to the device, futures out.

A service that receives images one at a time submits each to a :class:`RequestQueue`; one worker thread
gathers requests into batches and runs them through the codec's batch API. A batch starts when it holds
``max_batch`` requests or when its oldest request has waited ``max_latency_ms``, so latency stays bounded
under light load and batches fill under heavy load.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections import defaultdict
from concurrent.futures import Future
from dataclasses import dataclass, field

from PIL import Image

from latentcodec.engine.codec import Codec
from latentcodec.engine.errors import EngineError
from latentcodec.engine.images import ImageInput
from latentcodec.engine.options import EncodeOptions


@dataclass
class _Request:
    kind: str  # "encode" or "decode"
    item: object
    options: EncodeOptions | bool  # encode: the validated options; decode: whether to denoise
    future: Future = field(default_factory=Future)


_CLOSE = object()


class RequestQueue:
    """Batches single encode/decode requests for a :class:`Codec`.

    ``max_batch`` defaults to the codec's batch size. Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, codec: Codec, *, max_batch: int | None = None, max_latency_ms: float = 5.0) -> None:
        if max_latency_ms < 0:
            raise ValueError(f"max_latency_ms must be >= 0, got {max_latency_ms}")
        self.codec = codec
        self.max_batch = max(1, max_batch or codec.batch_size)
        self.max_latency = max_latency_ms / 1000
        self._requests: queue.SimpleQueue = queue.SimpleQueue()
        self._closed = False
        self._worker = threading.Thread(target=self._serve, name="latentcodec-queue", daemon=True)
        self._worker.start()

    def encode(self, image: ImageInput, *, options: EncodeOptions | None = None, **overrides) -> Future[bytes]:
        """Queue an image; the future resolves to its stream or raises its error. Requests with equal options
        share batches."""
        validated = EncodeOptions.resolve(options, overrides)  # bad options fail here, in the caller's thread
        return self._submit(_Request("encode", image, validated))

    def decode(self, data: bytes, *, denoise: bool = True) -> Future[Image.Image]:
        """Queue a stream; the future resolves to the decoded Pillow image or raises its error."""
        return self._submit(_Request("decode", data, bool(denoise)))

    async def encode_async(self, image: ImageInput, *, options: EncodeOptions | None = None, **overrides) -> bytes:
        return await asyncio.wrap_future(self.encode(image, options=options, **overrides))

    async def decode_async(self, data: bytes, *, denoise: bool = True) -> Image.Image:
        return await asyncio.wrap_future(self.decode(data, denoise=denoise))

    def _submit(self, request: _Request) -> Future:
        if self._closed:
            raise EngineError("the request queue is closed")
        self._requests.put(request)
        return request.future

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
            items = [r.item for r in requests]
            try:
                if kind == "encode":
                    results = self.codec.encode_batch(items, options=options)
                else:
                    results = self.codec.decode_batch(items, denoise=options)
            except Exception as exc:  # an engine failure surfaces in every waiting future
                results = None
                for request in requests:
                    request.future.set_exception(exc)
            for request, result in zip(requests, results or (), strict=True):
                if result.ok:
                    request.future.set_result(result.value)
                else:
                    request.future.set_exception(result.error)
