"""The HTTP service under uvicorn: one event loop, h11 framing, the operator's connection and time limits.

uvicorn parses every request (h11: one ``Content-Length`` of ASCII digits or chunks, bounded heads; anything else
is a 400 and a closed connection), answers 503 and closes where the operator's cap is reached, closes idle
keep-alive connections and shuts down gracefully (no new connections; every accepted request is answered, then
the queue finishes). It does not time out a connection that has yet to send a whole request head, nor bound the
body it drops after an early answer, and its cap counts requests as well as connections: the protocol here adds
``timeout_s`` for a head, ``DRAIN_FACTOR`` times ``max_body`` bytes dropped, and a cap of connections alone.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import TYPE_CHECKING

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from latentcodec.bindings.http_limits import DRAIN_FACTOR, ServiceLimits
from latentcodec.bindings.http_service import create_app

BACKLOG = 2048  # uvicorn's default

if TYPE_CHECKING:
    from latentcodec.engine.codec import Codec


class BoundedH11(H11Protocol):
    """uvicorn's h11 protocol, with a deadline for each request head (``timeout_keep_alive`` seconds from the
    connection opening or the previous answer), a bound on the bytes dropped after an early answer, and a cap on
    open connections: one opened past ``max_connections`` gets uvicorn's 503 for its request, and is closed."""

    max_drop = 0  # set by the server's subclass
    max_connections = 0

    def connection_made(self, transport) -> None:  # type: ignore[no-untyped-def]
        super().connection_made(transport)
        # uvicorn's own limit_concurrency counts running requests too, and a keep-alive client briefly holds two
        # (its answered one still finishing): counting connections alone, as they open, is the cap the operator set
        self.limit_concurrency = 0 if len(self.connections) > self.max_connections else None
        self._deadline(restart=True)

    def on_response_complete(self) -> None:
        super().on_response_complete()  # may start a pipelined request
        if self.cycle.response_complete and not self.transport.is_closing():
            self._deadline(restart=True)

    def data_received(self, data: bytes) -> None:
        waiting = self.cycle is None or self.cycle.response_complete  # for a head, or dropping an unread body
        self._dropped += len(data) if waiting else 0
        super().data_received(data)  # cancels uvicorn's keep-alive timer
        if (self.cycle is None or self.cycle.response_complete) and not self.transport.is_closing():
            if self._dropped > self.max_drop:
                self.timeout_keep_alive_handler()
            else:
                self._deadline(restart=False)

    def _deadline(self, restart: bool) -> None:
        """(Re)arm the close: ``restart`` starts a new head's time, else the current head's deadline holds."""
        if restart:
            self._head_by, self._dropped = self.loop.time() + self.timeout_keep_alive, 0
        self._unset_keepalive_if_required()
        self.timeout_keep_alive_task = self.loop.call_at(self._head_by, self.timeout_keep_alive_handler)


class CodecServer:
    """The service bound to ``address`` (OSError at once when it cannot listen), its queue over ``codec``,
    within ``limits``. :meth:`serve_forever` runs it in this thread (SIGINT and SIGTERM shut it down
    gracefully); :meth:`serve_in_background` in a thread of its own, stopped by :meth:`shutdown`."""

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
        self.socket = socket.socket()
        try:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.socket.bind(address)
            self.socket.listen(BACKLOG)  # connections wait in the backlog while the service starts
        except OSError:
            self.socket.close()
            raise
        self.server_address: tuple[str, int] = self.socket.getsockname()[:2]
        self.app = create_app(codec, self.limits, max_latency_ms=max_latency_ms)
        self.queue = self.app.state.service.queue
        caps = {"max_drop": DRAIN_FACTOR * self.limits.max_body, "max_connections": self.limits.max_connections}
        protocol = type("Protocol", (BoundedH11,), caps)
        config = uvicorn.Config(
            self.app,
            http=protocol,
            loop="asyncio",  # as tested, whether or not uvloop is installed (ray[serve] brings it)
            lifespan="on",
            timeout_keep_alive=self.limits.timeout_s,  # type: ignore[arg-type]  (a float serves)
            timeout_graceful_shutdown=None,  # every accepted request is answered (each bounded by timeout_s)
            log_config=None,
            access_log=False,
            server_header=False,
            backlog=BACKLOG,
        )
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    def serve_forever(self) -> None:
        self._server.run(sockets=[self.socket])

    def serve_in_background(self) -> threading.Thread:
        """Serve from a thread; returns once the service answers."""
        self._thread = threading.Thread(target=self.serve_forever, name="latentcodec-http", daemon=True)
        self._thread.start()
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the HTTP service stopped while starting")
            time.sleep(0.01)
        return self._thread

    def shutdown(self) -> None:
        """Stop accepting, answer every accepted request, finish the queue; returns when done."""
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join()

    def server_close(self) -> None:
        self.socket.close()
        self.queue.close()
