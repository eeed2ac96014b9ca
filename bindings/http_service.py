"""HTTP service: other front ends encode and decode through one batched codec.

``latentcodec serve --port 8080`` answers:

- ``POST /encode?mode=uniform&quality=50`` (any :class:`EncodeOptions` field as a query parameter), body an
  image file: 200 with the stream (``image/x-latentcodec``).
- ``POST /decode`` (``?denoise=0`` skips the denoiser the stream names), body a stream: 200 with a PNG.
- ``GET /health``: 200 with JSON (model, device, batching).

Errors are JSON ``{"error": ..., "type": ...}``: 400 for bad input or options, 404, 411 without a length,
413 past ``max_body`` bytes, 500 for engine failures. Concurrent requests are batched by a
:class:`RequestQueue` (``max_latency_ms``), so many small clients still fill the device.
"""

from __future__ import annotations

import io
import json
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

from latentcodec.bindings.pillow_plugin import MIME
from latentcodec.engine.codec import Codec
from latentcodec.engine.errors import EngineError, LatentCodecError
from latentcodec.engine.options import EncodeOptions, parse_bool
from latentcodec.engine.queue import RequestQueue

MAX_BODY = 64 << 20
DRAIN_FACTOR = 4  # bodies up to this many times the limit are read and dropped before the 413


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


class _Handler(BaseHTTPRequestHandler):
    server: CodecServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if urlsplit(self.path).path != "/health":
            return self._error(HTTPStatus.NOT_FOUND, LookupError(f"no such resource {self.path}"))
        codec = self.server.queue.codec
        body = {"model": codec.model_id, "device": str(codec.device), "max_batch": self.server.queue.max_batch}
        self._send(HTTPStatus.OK, json.dumps(body).encode(), "application/json")

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        if url.path not in ("/encode", "/decode"):
            return self._error(HTTPStatus.NOT_FOUND, LookupError(f"no such resource {url.path}"))
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            return self._error(HTTPStatus.LENGTH_REQUIRED, ValueError("a Content-Length is required"))
        if int(length) > self.server.max_body:
            self.close_connection = True
            if int(length) <= DRAIN_FACTOR * self.server.max_body:
                self._discard(int(length))  # a client still sending would otherwise see a reset, not the 413
            return self._error(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE, ValueError(f"body over {self.server.max_body} bytes")
            )
        body = self.rfile.read(int(length))
        try:
            if url.path == "/encode":
                data = self.server.queue.encode(body, options=parse_options(url.query)).result()
                return self._send(HTTPStatus.OK, data, MIME)
            image = self.server.queue.decode(body, denoise=parse_decode_options(url.query)).result()
        except Exception as exc:  # every failure gets an answer: 400 for the client's, 500 for the engine's
            client_error = isinstance(exc, (ValueError, LatentCodecError)) and not isinstance(exc, EngineError)
            return self._error(HTTPStatus.BAD_REQUEST if client_error else HTTPStatus.INTERNAL_SERVER_ERROR, exc)
        png = io.BytesIO()
        image.save(png, format="PNG")
        self._send(HTTPStatus.OK, png.getvalue(), "image/png")

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
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:  # quiet: services log through their own stack
        pass


class CodecServer(ThreadingHTTPServer):
    """A threading HTTP server whose handlers share one batching queue over ``codec``."""

    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], codec: Codec, *, max_latency_ms: float = 5.0, max_body: int = MAX_BODY
    ) -> None:
        super().__init__(address, _Handler)
        self.queue = RequestQueue(codec, max_latency_ms=max_latency_ms)
        self.max_body = max_body

    def serve_in_background(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="latentcodec-http", daemon=True)
        thread.start()
        return thread

    def server_close(self) -> None:
        super().server_close()
        self.queue.close()
