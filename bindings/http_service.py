"""HTTP service: other front ends encode and decode through one batched codec (a Starlette app; uvicorn runs it,
:mod:`latentcodec.bindings.http_server`).

- ``POST /encode?mode=uniform&quality=50`` (any :class:`EncodeOptions` field as a query parameter or form field,
  within the operator's limits), body an image file, raw or the one file part of a ``multipart/form-data``
  form: 200 with the stream (``image/x-latentcodec``).
- ``POST /decode`` (``?denoise=0`` skips the denoiser the stream names), body a stream, raw or in a form: 200
  with a PNG.
- ``GET /health``: 200 with JSON (model, device, batching), 503 when the worker has stopped.
- ``GET /metrics``: Prometheus metrics (:mod:`~latentcodec.bindings.http_metrics`); ``GET /openapi.json``.

Errors are JSON ``{"error": ..., "type": ...}``: 400 for bad input, options or framing, 401 without the
operator's token, 404, 408 for a stalled body, 411 without a length, 413 past the body or pixel limits, 500 for
engine failures, 503 when the queue is full. Every request goes through the :class:`RequestQueue`'s async API,
so connections share device batches without a thread each; what a stranger may cost is
:mod:`~latentcodec.bindings.http_limits`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import fields
from http import HTTPStatus
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

from PIL import Image
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from latentcodec.bindings.http_limits import Refusal, SendTimeout, ServiceLimits, read_upload
from latentcodec.bindings.http_metrics import Metrics, Observed
from latentcodec.bindings.http_openapi import openapi
from latentcodec.bindings.pillow_plugin import MIME
from latentcodec.engine.errors import BusyError, EngineError, LatentCodecError, LimitError
from latentcodec.engine.options import EncodeOptions, parse_bool
from latentcodec.engine.queue import RequestQueue

if TYPE_CHECKING:
    from latentcodec.engine.codec import Codec

ROUTES = ("/encode", "/decode", "/health", "/metrics", "/openapi.json")
Handler = Callable[["Service", Request], Awaitable[Response]]


def parse_decode_options(pairs: list[tuple[str, str]]) -> bool:
    """Whether to run the stream's denoiser: ``denoise=0`` (or false, no) skips it."""
    denoise = True
    for name, text in pairs:
        try:
            if name != "denoise":
                raise ValueError
            denoise = parse_bool(text)
        except ValueError:
            raise ValueError(f"unknown decode option {name}={text!r}") from None
    return denoise


def parse_options(query: str) -> EncodeOptions:
    """Encode options from a query string, each typed as its :class:`EncodeOptions` field declares."""
    return EncodeOptions.parse(parse_qsl(query, keep_blank_values=True))


def status_of(exc: Exception) -> HTTPStatus:
    """The answer to a failed request: the client's fault (4xx), capacity (503) or the engine's (500)."""
    if isinstance(exc, BusyError):
        return HTTPStatus.SERVICE_UNAVAILABLE
    if isinstance(exc, LimitError):
        return HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    if isinstance(exc, (ValueError, LatentCodecError, ClientDisconnect)) and not isinstance(exc, EngineError):
        return HTTPStatus.BAD_REQUEST
    return HTTPStatus.INTERNAL_SERVER_ERROR


def _answered(handler: Handler) -> Handler:
    """``handler`` with every failure answered as JSON (and counted)."""

    @functools.wraps(handler)
    async def answer(service: Service, request: Request) -> Response:
        try:
            return await handler(service, request)
        except Refusal as refusal:
            return service.error(request, refusal.status, refusal.error, close=refusal.close)
        except Exception as exc:  # every failure gets an answer
            return service.error(request, status_of(exc), exc)

    return answer


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


class Service:
    """The routes of one service: requests in, through ``limits``, to ``queue``."""

    def __init__(self, codec: Codec, limits: ServiceLimits, max_latency_ms: float) -> None:
        self.limits, self.metrics = limits, Metrics(ROUTES)
        self.queue = RequestQueue(
            codec, max_latency_ms=max_latency_ms, max_pending=limits.max_pending, on_batch=self.metrics.batch
        )
        self.metrics.watch(self.queue)
        self.schema = openapi(limits)

    def error(self, request: Request, status: int, exc: Exception, *, close: bool = False) -> Response:
        self.metrics.error(request.url.path, exc)
        headers = {"WWW-Authenticate": "Bearer"} if status == HTTPStatus.UNAUTHORIZED else {}
        if close:
            headers["Connection"] = "close"
        return JSONResponse({"error": str(exc), "type": type(exc).__name__}, status, headers=headers)

    def _check_token(self, request: Request) -> None:
        if not self.limits.authorised(request):
            raise Refusal(HTTPStatus.UNAUTHORIZED, PermissionError("a valid bearer token is required"), close=False)

    @_answered
    async def encode(self, request: Request) -> Response:
        self._check_token(request)
        data, form = await read_upload(request, self.limits, max_fields=len(fields(EncodeOptions)))
        options = self.limits.check(EncodeOptions.parse([*parse_qsl(request.url.query, keep_blank_values=True), *form]))
        self.limits.check_image(data)
        return Response(await self.queue.encode_async(data, options=options), media_type=MIME)

    @_answered
    async def decode(self, request: Request) -> Response:
        self._check_token(request)
        data, form = await read_upload(request, self.limits, max_fields=1)
        denoise = parse_decode_options([*parse_qsl(request.url.query, keep_blank_values=True), *form])
        image = await self.queue.decode_async(data, denoise=denoise, max_pixels=self.limits.max_pixels)
        return Response(await asyncio.to_thread(_png, image), media_type="image/png")

    async def health(self, _request: Request) -> Response:
        queue, codec = self.queue, self.queue.codec
        body = {"model": codec.model_id, "device": str(codec.device), "max_batch": queue.max_batch}
        status = HTTPStatus.OK if queue.alive else HTTPStatus.SERVICE_UNAVAILABLE
        return JSONResponse({**body, "worker": "running" if queue.alive else "stopped"}, status)

    async def metrics_text(self, _request: Request) -> Response:
        return Response(self.metrics.render(), media_type=self.metrics.content_type)

    async def openapi(self, _request: Request) -> Response:
        return JSONResponse(self.schema)

    async def not_found(self, request: Request, exc: Exception) -> Response:
        """Starlette's 404 and 405, as JSON."""
        status = exc.status_code if isinstance(exc, HTTPException) else HTTPStatus.NOT_FOUND
        detail = exc.detail if isinstance(exc, HTTPException) else ""
        message = f"no such resource {request.url.path}" if status == HTTPStatus.NOT_FOUND else detail
        return self.error(request, status, LookupError(message))

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        await asyncio.to_thread(self.queue.codec.encoder.plan, EncodeOptions())  # the default denoiser, loaded
        yield
        await asyncio.to_thread(self.queue.close)  # uvicorn has let every accepted request finish


def create_app(codec: Codec, limits: ServiceLimits | None = None, *, max_latency_ms: float = 5.0) -> Starlette:
    """The service's ASGI app over ``codec``; ``app.state.service`` holds its queue, limits and metrics."""
    service = Service(codec, limits or ServiceLimits(), max_latency_ms)
    routes = [
        Route("/encode", service.encode, methods=["POST"]),
        Route("/decode", service.decode, methods=["POST"]),
        Route("/health", service.health, methods=["GET"]),
        Route("/metrics", service.metrics_text, methods=["GET"]),
        Route("/openapi.json", service.openapi, methods=["GET"]),
    ]
    middleware = [
        Middleware(Observed, metrics=service.metrics),
        Middleware(SendTimeout, timeout_s=service.limits.timeout_s),
    ]
    handlers = {HTTPException: service.not_found}
    app = Starlette(routes=routes, middleware=middleware, exception_handlers=handlers, lifespan=service.lifespan)
    app.state.service = service
    return app
