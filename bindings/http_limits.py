"""What a stranger may cost the HTTP service: the operator's limits, the token, and request bodies read within them.

uvicorn (h11) parses and frames every request; this module only decides what a parsed request may carry:
one framing (a body with both ``Content-Length`` and ``Transfer-Encoding`` is refused, and its connection closed,
as RFC 9112 6.1 asks), a length or chunks (411 without either), at most ``max_body`` bytes, counted while the
body streams in (413 once past it), no silence longer than ``timeout_s`` between its chunks (408), and answers
the client reads within ``timeout_s``.
"""

from __future__ import annotations

import asyncio
import hmac
import io
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus

from PIL import Image
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from latentcodec.engine.errors import LimitError
from latentcodec.engine.options import EncodeOptions

MAX_BODY = 64 << 20
DRAIN_FACTOR = 4  # after an early 413, up to this many times the limit is read and dropped (http_server.py)
TOKEN_ENV = "LATENTCODEC_TOKEN"


@dataclass(frozen=True)
class ServiceLimits:
    """What one request, and all of them together, may cost. ``token``: callers must send
    ``Authorization: Bearer <token>`` (compared in constant time); None serves everyone."""

    max_body: int = MAX_BODY
    max_pixels: int = 2048 * 2048  # of an image to encode or a stream to decode, from its header
    max_effort: int = 0  # refinement steps an encode may ask for
    allow_target_psnr: bool = False  # its search decodes up to about 40 times
    max_connections: int = 64
    max_pending: int = 256  # requests waiting in or running through the queue
    timeout_s: float = 30.0  # silence this long (a stalled upload or request head, an idle client) closes a socket
    token: str | None = None

    def check(self, options: EncodeOptions) -> EncodeOptions:
        """``options`` if the operator allows their cost, else ValueError."""
        if options.effort > self.max_effort:
            raise ValueError(f"effort {options.effort} is over this service's limit of {self.max_effort}")
        if options.target_psnr is not None and not self.allow_target_psnr:
            raise ValueError("target_psnr searches are disabled on this service (use target_bpp)")
        return options

    def check_image(self, data: bytes) -> None:
        """LimitError when the image file's header declares more than ``max_pixels``; no pixel is decoded. Data
        Pillow cannot open passes, for the encoder's intake to refuse with its reason."""
        try:
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
        except Exception:
            return
        if width * height > self.max_pixels:
            raise LimitError(f"image {width}x{height} is over this service's limit of {self.max_pixels} pixels")

    def authorised(self, request: Request) -> bool:
        if self.token is None:
            return True
        sent = request.headers.get("authorization", "")
        return hmac.compare_digest(sent.encode(), f"Bearer {self.token}".encode())


class Refusal(Exception):
    """A request answered before any work: ``status``, with ``error`` as the JSON body; ``close``: the connection
    with it (its framing cannot be trusted, or too much would be left to drop)."""

    def __init__(self, status: HTTPStatus, error: Exception, *, close: bool = True) -> None:
        super().__init__(str(error))
        self.status, self.error, self.close = status, error, close


class LimitedBody:
    """A request's ``receive`` within ``limits``: framing checked from the parsed head, bytes counted as they
    arrive (413 as soon as they pass ``max_body``), each chunk awaited at most ``timeout_s`` (408).

    An early 413 keeps the connection when the rest of the body is worth dropping (up to ``DRAIN_FACTOR`` times
    the limit: the server reads it on, so a client still sending sees the 413 rather than a reset)."""

    def __init__(self, request: Request, limits: ServiceLimits) -> None:
        self._receive: Callable[[], Awaitable[Message]] = request.receive
        self.limit, self.timeout = limits.max_body, limits.timeout_s
        self.read = 0
        headers = request.headers
        chunked, length = "transfer-encoding" in headers, headers.get("content-length")
        if chunked and length is not None:
            raise Refusal(HTTPStatus.BAD_REQUEST, ValueError("ambiguous framing: Content-Length and Transfer-Encoding"))
        if not chunked and length is None:
            raise Refusal(HTTPStatus.LENGTH_REQUIRED, ValueError("a Content-Length (or a chunked body) is required"))
        if length is not None and int(length) > self.limit:  # h11 let through ASCII digits only
            waiting = headers.get("expect", "").lower() == "100-continue"  # nothing sent yet: nothing to drop
            raise self._too_large(close=waiting or int(length) > DRAIN_FACTOR * self.limit)

    def _too_large(self, close: bool = False) -> Refusal:
        return Refusal(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, ValueError(f"body over {self.limit} bytes"), close=close)

    async def receive(self) -> Message:
        """The next body message, or Refusal (413 past the limit, 408 after a silence)."""
        try:
            message = await asyncio.wait_for(self._receive(), self.timeout)
        except asyncio.TimeoutError:
            raise Refusal(HTTPStatus.REQUEST_TIMEOUT, TimeoutError(f"no body bytes for {self.timeout:g} s")) from None
        if message["type"] == "http.request":
            self.read += len(message.get("body", b""))
            if self.read > self.limit:
                raise self._too_large()
        return message


async def read_upload(request: Request, limits: ServiceLimits, max_fields: int) -> tuple[bytes, list[tuple[str, str]]]:
    """The uploaded file and the form's text fields: a ``multipart/form-data`` body's one file part and its
    other fields, or a raw body and no fields."""
    limited = Request(request.scope, LimitedBody(request, limits).receive)
    if limited.headers.get("content-type", "").split(";")[0].strip().lower() != "multipart/form-data":
        return await limited.body(), []
    try:
        form = await limited.form(max_files=1, max_fields=max_fields, max_part_size=64 << 10)
    except HTTPException as exc:  # Starlette's answer to a malformed form
        raise ValueError(f"bad multipart form: {exc.detail}") from None
    try:
        files = [value for _, value in form.multi_items() if isinstance(value, UploadFile)]
        if len(files) != 1:
            raise ValueError(f"a multipart upload carries one file part, not {len(files)}")
        return await files[0].read(), [(name, v) for name, v in form.multi_items() if isinstance(v, str)]
    finally:
        await form.close()


class SendTimeout:
    """ASGI middleware: an answer the client does not read within ``timeout_s`` ends its connection."""

    def __init__(self, app: ASGIApp, timeout_s: float) -> None:
        self.app, self.timeout = app, timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def timed(message: Message) -> None:
            await asyncio.wait_for(send(message), self.timeout)

        await self.app(scope, receive, timed if scope["type"] == "http" else send)
