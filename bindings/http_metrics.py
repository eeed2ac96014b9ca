"""The HTTP service's Prometheus metrics, in a registry of its own (tests and embedders can build several apps).

``GET /metrics`` exports, in the Prometheus text format:

- ``latentcodec_http_requests_total{route, status}``: answers, by route (``other`` for unknown paths) and status;
- ``latentcodec_http_errors_total{route, type}``: error answers by the error's type (``ValueError``,
  ``InvalidImageError``, ``BusyError``, ...);
- ``latentcodec_http_request_seconds{route}``: latency histogram, head received to last byte sent;
- ``latentcodec_batch_size{kind}``: requests per codec batch (``encode`` or ``decode``);
- ``latentcodec_queue_depth``: requests waiting in or running through the queue;
- ``latentcodec_http_in_flight``: requests being answered.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from latentcodec.engine.queue import RequestQueue

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    """The service's counters, histograms and gauges; :meth:`render` is the ``/metrics`` body."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, routes: Collection[str]) -> None:
        self.routes = frozenset(routes)
        self.registry = registry = CollectorRegistry()
        self.requests = Counter(
            "latentcodec_http_requests", "HTTP answers by route and status", ["route", "status"], registry=registry
        )
        self.errors = Counter(
            "latentcodec_http_errors",
            "HTTP error answers by route and error type",
            ["route", "type"],
            registry=registry,
        )
        self.latency = Histogram(
            "latentcodec_http_request_seconds",
            "seconds from a request's head to its answer's last byte",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.batches = Histogram(
            "latentcodec_batch_size", "requests per codec batch", ["kind"], buckets=BATCH_BUCKETS, registry=registry
        )
        self.depth = Gauge(
            "latentcodec_queue_depth", "requests waiting in or running through the queue", registry=registry
        )
        self.in_flight = Gauge("latentcodec_http_in_flight", "HTTP requests being answered", registry=registry)

    def route(self, path: str) -> str:
        """The label of ``path``: a route of the service, else ``other`` (so strangers cannot grow the labels)."""
        return path if path in self.routes else "other"

    def watch(self, queue: RequestQueue) -> None:
        self.depth.set_function(lambda: queue.pending)

    def batch(self, kind: str, size: int) -> None:
        self.batches.labels(kind).observe(size)

    def error(self, path: str, exc: Exception) -> None:
        self.errors.labels(self.route(path), type(exc).__name__).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class Observed:
    """ASGI middleware: counts each answer by route and status and times it."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        route, status, started = self.metrics.route(scope["path"]), 500, time.perf_counter()

        async def observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, observed)
        finally:
            self.metrics.in_flight.dec()
            self.metrics.requests.labels(route, str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - started)
