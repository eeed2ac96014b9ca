"""HTTP service: other front ends encode and decode through one batched codec.

``latentcodec serve --port 8080`` answers:

- ``POST /encode?mode=uniform&quality=50`` (any :class:`EncodeOptions` field as a query parameter, within the
  operator's limits), body an image file: 200 with the stream (``image/x-latentcodec``).
- ``POST /decode`` (``?denoise=0`` skips the denoiser the stream names), body a stream: 200 with a PNG.
- ``GET /health``: 200 with JSON (model, device, batching), 503 when the worker has stopped.

Errors are JSON ``{"error": ..., "type": ...}``: 400 for bad input, options or framing, 401 without the
operator's token, 404, 411 without a length, 413 past the body or pixel limits, 500 for engine failures, 503
when the queue or the connection slots are full. Every stranger is assumed hostile: bodies, pixels, costly
options, connections, waiting requests and idle sockets are all bounded (:class:`ServiceLimits`). The service
speaks plain HTTP: put it behind a TLS-terminating proxy when it leaves the machine.
"""

from __future__ import annotations

import contextlib
import hmac
import io
import json
import re
import threading
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlsplit

from latentcodec.bindings.pillow_plugin import MIME
from latentcodec.engine.errors import BusyError, EngineError, LatentCodecError, LimitError
from latentcodec.engine.options import EncodeOptions, parse_bool

if TYPE_CHECKING:  # the CLI reads ServiceLimits' defaults for its help without importing torch
    from latentcodec.engine.codec import Codec

MAX_BODY = 64 << 20
DRAIN_FACTOR = 4  # bodies up to this many times the limit are read and dropped before the 413
TOKEN_ENV = "LATENTCODEC_TOKEN"
_LENGTH = re.compile(r"[0-9]{1,15}")


@dataclass(frozen=True)
class ServiceLimits:
    """What one request, and all of them together, may cost. ``token``: callers must send
    ``Authorization: Bearer <token>`` (compared in constant time); None serves everyone."""

    max_body: int = MAX_BODY
    max_pixels: int = 2048 * 2048  # of a stream to decode, from its header
    max_effort: int = 0  # refinement steps an encode may ask for
    allow_target_psnr: bool = False  # its search decodes up to about 40 times
    max_connections: int = 64
    max_pending: int = 256  # requests waiting in or running through the queue
    timeout_s: float = 30.0  # a socket idle this long (a stalled upload, a silent client) is closed
    token: str | None = None

    def check(self, options: EncodeOptions) -> EncodeOptions:
        """``options`` if the operator allows their cost, else ValueError."""
        if options.effort > self.max_effort:
            raise ValueError(f"effort {options.effort} is over this service's limit of {self.max_effort}")
        if options.target_psnr is not None and not self.allow_target_psnr:
            raise ValueError("target_psnr searches are disabled on this service (use target_bpp)")
        return options


def parse_decode_options(query: str) -> bool:
    """Whether to run the stream's denoiser: ``denoise=0`` (or false, no) skips it."""
    denoise = True
    for name, text in parse_qsl(query, keep_blank_values=True):
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
    if isinstance(exc, (ValueError, LatentCodecError)) and not isinstance(exc, EngineError):
        return HTTPStatus.BAD_REQUEST
    return HTTPStatus.INTERNAL_SERVER_ERROR


class _Handler(BaseHTTPRequestHandler):
    server: CodecServer
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        self.timeout = self.server.limits.timeout_s  # socket timeout for every read and write
        super().setup()

    def do_GET(self) -> None:
        if urlsplit(self.path).path != "/health":
            return self._error(HTTPStatus.NOT_FOUND, LookupError(f"no such resource {self.path}"))
        queue = self.server.queue
        codec = queue.codec
        body = {"model": codec.model_id, "device": str(codec.device), "max_batch": queue.max_batch}
        status = HTTPStatus.OK if queue.alive else HTTPStatus.SERVICE_UNAVAILABLE
        self._send(
            status, json.dumps({**body, "worker": "running" if queue.alive else "stopped"}).encode(), "application/json"
        )

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        if url.path not in ("/encode", "/decode"):
            return self._error(HTTPStatus.NOT_FOUND, LookupError(f"no such resource {url.path}"))
        if not self._authorised():
            return self._error(HTTPStatus.UNAUTHORIZED, PermissionError("a valid bearer token is required"))
        body = self._body()
        if body is None:
            return
        limits, queue = self.server.limits, self.server.queue
        try:
            if url.path == "/encode":
                options = limits.check(parse_options(url.query))
                data = queue.encode(body, options=options).result()
                return self._send(HTTPStatus.OK, data, MIME)
            image = queue.decode(body, denoise=parse_decode_options(url.query), max_pixels=limits.max_pixels).result()
        except Exception as exc:  # every failure gets an answer
            return self._error(status_of(exc), exc)
        png = io.BytesIO()
        image.save(png, format="PNG")
        self._send(HTTPStatus.OK, png.getvalue(), "image/png")

    def _authorised(self) -> bool:
        token = self.server.limits.token
        if token is None:
            return True
        sent = self.headers.get("Authorization", "")
        return hmac.compare_digest(sent.encode(), f"Bearer {token}".encode())

    def _body(self) -> bytes | None:
        """The request body, or None once an error has been answered (ambiguous framing, no length, too big)."""
        lengths = self.headers.get_all("Content-Length") or []
        if self.headers.get("Transfer-Encoding") is not None or len(lengths) > 1:
            self.close_connection = True  # the next request's boundary cannot be trusted
            self._error(
                HTTPStatus.BAD_REQUEST, ValueError("ambiguous framing: one Content-Length, no Transfer-Encoding")
            )
            return None
        if not lengths or not _LENGTH.fullmatch(lengths[0].strip()):
            self.close_connection = True
            self._error(HTTPStatus.LENGTH_REQUIRED, ValueError("a Content-Length of ASCII digits is required"))
            return None
        length, limit = int(lengths[0]), self.server.limits.max_body
        if length > limit:
            self.close_connection = True
            if length <= DRAIN_FACTOR * limit:
                self._discard(length)  # a client still sending would otherwise see a reset, not the 413
            self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, ValueError(f"body over {limit} bytes"))
            return None
        return self.rfile.read(length)

    def _discard(self, length: int) -> None:
        while length > 0:
            chunk = self.rfile.read(min(length, 1 << 16))
            if not chunk:
                return
            length -= len(chunk)

    def _error(self, status: HTTPStatus, exc: Exception) -> None:
        body = json.dumps({"error": str(exc), "type": type(exc).__name__}).encode()
        self._send(status, body, "application/json")

    def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if status == HTTPStatus.UNAUTHORIZED:
            self.send_header("WWW-Authenticate", "Bearer")
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:  # quiet: services log through their own stack
        pass


class CodecServer(ThreadingHTTPServer):
    """A threading HTTP server whose handlers share one batching queue over ``codec``, within ``limits``.
    Past ``limits.max_connections`` open connections, a new one is answered 503 and closed."""

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        codec: Codec,
        *,
        max_latency_ms: float = 5.0,
        max_body: int | None = None,
        limits: ServiceLimits | None = None,
    ) -> None:
        limits = limits or ServiceLimits()
        self.limits = limits if max_body is None else ServiceLimits(**{**vars(limits), "max_body": max_body})
        from latentcodec.engine.queue import RequestQueue

        self.queue = None  # a server that cannot bind closes itself before it has a queue
        super().__init__(address, _Handler)
        self.queue = RequestQueue(codec, max_latency_ms=max_latency_ms, max_pending=self.limits.max_pending)
        self._connections = threading.BoundedSemaphore(self.limits.max_connections)

    def process_request(self, request, client_address) -> None:
        if not self._connections.acquire(blocking=False):
            with contextlib.suppress(OSError):
                request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._connections.release()

    def serve_in_background(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="latentcodec-http", daemon=True)
        thread.start()
        return thread

    def server_close(self) -> None:
        super().server_close()
        if self.queue is not None:
            self.queue.close()
