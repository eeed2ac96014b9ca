"""The request queue: single requests batched by size or latency, results and errors through futures."""

import asyncio

import pytest

from latentcodec import Codec, RequestQueue
from latentcodec.engine.errors import EngineError, InvalidImageError


class _SpyCodec(Codec):
    """Records the size of every batch the queue hands over."""

    def __init__(self) -> None:
        super().__init__("taef2", device="cpu", batch_size=4)
        self.batches: list[int] = []

    def encode_batch(self, images, **options):
        self.batches.append(len(images))
        return super().encode_batch(images, **options)


def test_requests_are_batched_and_answered_in_order(codec, kodak_crop, odd_crop):
    spy = _SpyCodec()
    images = [kodak_crop, odd_crop, kodak_crop, odd_crop, kodak_crop]
    with RequestQueue(spy, max_latency_ms=500) as q:
        futures = [q.encode(image, mode="uniform") for image in images]
        streams = [f.result(timeout=60) for f in futures]
    assert spy.batches == [4, 1]  # a full batch at once, then the rest when its latency budget ran out
    assert streams == [codec.encode(image, mode="uniform") for image in images]


def test_a_lone_request_waits_at_most_the_latency_budget(kodak_crop):
    with RequestQueue(_SpyCodec(), max_batch=64, max_latency_ms=1) as q:
        data = q.encode(kodak_crop).result(timeout=30)
        assert q.decode(data).result(timeout=30).size == kodak_crop.size


def test_errors_reach_only_their_own_future(kodak_crop):
    with RequestQueue(_SpyCodec(), max_latency_ms=200) as q:
        good, bad = q.encode(kodak_crop), q.encode(b"not an image")
        broken = q.decode(b"\x89LCZ nonsense")
        assert good.result(timeout=60)
        with pytest.raises(InvalidImageError):
            bad.result(timeout=60)
        with pytest.raises(Exception, match="stream"):
            broken.result(timeout=60)
        with pytest.raises(ValueError):
            q.encode(kodak_crop, quality=500)  # bad options fail in the caller's thread
    with pytest.raises(EngineError, match="closed"):
        q.encode(kodak_crop)


def test_asyncio_callers(kodak_crop, odd_crop):
    async def main(q):
        streams = await asyncio.gather(q.encode_async(kodak_crop), q.encode_async(odd_crop, mode="palette"))
        return await asyncio.gather(*(q.decode_async(s) for s in streams))

    with RequestQueue(_SpyCodec(), max_latency_ms=50) as q:
        decoded = asyncio.run(main(q))
    assert [image.size for image in decoded] == [kodak_crop.size, odd_crop.size]


def test_pending_requests_and_batch_sizes_are_observable(codec, kodak_crop):
    batches: list[tuple[str, int]] = []
    with RequestQueue(codec, max_latency_ms=200, on_batch=lambda kind, size: batches.append((kind, size))) as q:
        futures = [q.encode(kodak_crop, denoiser=None) for _ in range(3)]
        assert 1 <= q.pending <= 3
        streams = [f.result(timeout=60) for f in futures]
        q.decode(streams[0]).result(timeout=60)
    assert q.pending == 0  # the worker has settled every future (and run their callbacks) before it stops
    assert batches == [("encode", 3), ("decode", 1)]
