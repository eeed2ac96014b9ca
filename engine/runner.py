"""Runs one network pass over batches of any size: static buffers in bucketed batch sizes, CUDA graphs on GPU.

A :class:`PassRunner` with ``static=True`` copies each batch into a preallocated input buffer whose batch size
is the next bucket (1, 2, 4, 8, ...), runs the pass on the whole buffer and hands back the first rows of the
output. On CUDA the pass is captured once per bucket and input shape as a CUDA graph and replayed, so a batch
costs one graph launch instead of hundreds of kernel launches. On the CPU the same code path runs the pass
eagerly (which is what makes it testable without a GPU); ``static=False`` simply calls the pass.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable

import torch

log = logging.getLogger(__name__)

BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)

Pass = Callable[..., torch.Tensor]  # one or more batch tensors (equal first dimension) -> a batch


def bucket_size(n: int) -> int:
    """The smallest bucket holding ``n`` items (multiples of the largest bucket beyond it)."""
    if n < 1:
        raise ValueError(f"batch of {n} items")
    for bucket in BUCKETS:
        if n <= bucket:
            return bucket
    return -(-n // BUCKETS[-1]) * BUCKETS[-1]


class _StaticBatch:
    """A pass bound to fixed input buffers; ``launch`` runs it and returns the output buffer."""

    def __init__(self, fn: Pass, inputs: tuple[torch.Tensor, ...]) -> None:
        self.fn, self.inputs = fn, inputs

    def launch(self) -> torch.Tensor:
        return self.fn(*self.inputs)


class _GraphedBatch(_StaticBatch):
    """A pass captured as a CUDA graph over its input buffer; ``launch`` replays it."""

    def __init__(self, fn: Pass, inputs: tuple[torch.Tensor, ...], pool, warmup: int) -> None:
        super().__init__(fn, inputs)
        device = inputs[0].device
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):  # warm-up outside the graph: cuDNN picks and caches its algorithms here
            for _ in range(warmup):
                fn(*inputs)
        torch.cuda.current_stream(device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        # thread-local: host threads may run their own CUDA work (entropy contexts) while this thread captures
        with torch.cuda.graph(self.graph, pool=pool, capture_error_mode="thread_local"):
            self.outputs = fn(*inputs)

    def launch(self) -> torch.Tensor:
        self.graph.replay()
        return self.outputs


class PassRunner:
    """Runs ``fn`` on batches, through static bucketed buffers (and CUDA graphs on CUDA) when ``static``.

    ``fn`` maps one or more batches on ``device`` (same first dimension) to a batch. Inputs may live anywhere;
    they are copied into the buffers (4-d inputs in ``memory_format``). The returned tensor is the caller's own.
    At most ``max_graphs`` captured shapes are kept (least recently used are dropped). Without static
    batches, ``max_rows`` splits a batch into passes of at most that many rows (CPU caches favour one).
    """

    def __init__(
        self,
        fn: Pass,
        device: torch.device,
        *,
        static: bool,
        memory_format: torch.memory_format = torch.contiguous_format,
        max_graphs: int = 16,
        warmup: int = 2,
        max_rows: int | None = None,
    ) -> None:
        self.fn, self.device, self.static = fn, torch.device(device), static
        self.graphs = static and self.device.type == "cuda"
        self.memory_format, self.max_graphs, self.warmup, self.max_rows = memory_format, max_graphs, warmup, max_rows
        self._batches: OrderedDict[tuple, _StaticBatch] = OrderedDict()
        self._pool = torch.cuda.graph_pool_handle() if self.graphs else None
        self._lock = threading.Lock()
        self.captures = 0  # how many static batches were built (graphs captured on CUDA)

    @torch.no_grad()  # not inference_mode: callers get ordinary tensors they may modify
    def __call__(self, *xs: torch.Tensor) -> torch.Tensor:
        if not self.static:
            return self._eager(*(self._layout(x.to(self.device, non_blocking=True)) for x in xs))
        n = xs[0].shape[0]
        key = (bucket_size(n), *((tuple(x.shape[1:]), x.dtype) for x in xs))
        with self._lock:
            batch = self._batches.get(key) or self._build(key, xs)
            self._batches.move_to_end(key)
            for buffer, x in zip(batch.inputs, xs, strict=True):
                buffer[:n].copy_(x, non_blocking=True)  # rows past n keep earlier data: valid, and discarded
            return batch.launch()[:n].clone()

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=self.memory_format) if x.ndim == 4 else x.contiguous()

    def _eager(self, *xs: torch.Tensor) -> torch.Tensor:
        if self.max_rows is None or xs[0].shape[0] <= self.max_rows:
            return self.fn(*xs)
        parts = zip(*(x.split(self.max_rows) for x in xs), strict=True)
        return torch.cat([self.fn(*part) for part in parts])

    def _build(self, key: tuple, xs: tuple[torch.Tensor, ...]) -> _StaticBatch:
        shape = (key[0], *xs[0].shape[1:])
        inputs = tuple(self._layout(torch.zeros((key[0], *x.shape[1:]), dtype=x.dtype, device=self.device)) for x in xs)
        batch: _StaticBatch = _StaticBatch(self._eager, inputs)
        if self.graphs:
            try:
                with torch.backends.cudnn.flags(enabled=True, benchmark=True, deterministic=False, allow_tf32=True):
                    batch = _GraphedBatch(self.fn, inputs, self._pool, self.warmup)
            except RuntimeError as exc:  # a pass that cannot be captured still runs, eagerly
                log.warning("CUDA graph capture of %s failed (%s); running it eagerly", shape, exc)
        self._batches[key] = batch
        self.captures += 1
        while len(self._batches) > self.max_graphs:
            self._batches.popitem(last=False)
        return batch

    def clear(self) -> None:
        """Drop every captured batch and its buffers."""
        with self._lock:
            self._batches.clear()


class HostCopy:
    """A device tensor on its way to host memory: pinned and asynchronous for CUDA, immediate otherwise."""

    def __init__(self, tensor: torch.Tensor) -> None:
        self.event = None
        if tensor.is_cuda:
            self.host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
            self.host.copy_(tensor, non_blocking=True)
            self.event = torch.cuda.Event()
            self.event.record()
        else:
            self.host = tensor

    def get(self) -> torch.Tensor:
        """The host tensor, once the copy has landed."""
        if self.event is not None:
            self.event.synchronize()
        return self.host
