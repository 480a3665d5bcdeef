"""HTTP/1.1 on uvicorn's httptools (llhttp) parser, with the limits uvicorn leaves out.

llhttp frames requests strictly: a body is always consumed by its ``Content-Length`` or
chunked framing (never parsed as a second request, whatever the answer was), and a
request with both ``Content-Length`` and ``Transfer-Encoding``, duplicate lengths,
obs-fold continuation lines, whitespace before a colon, bare LF line ends or an unknown
transfer coding is refused with 400 and the connection closed. (h11, uvicorn's other
parser, keeps such connections open and unfolds obs-fold: tried, and not used.)

What this subclass adds, because uvicorn does not:
- a cap on the bytes of a request's head (431, closed): llhttp itself has none;
- a deadline for a whole request to arrive, and for a fresh connection's first byte
  (408, closed): uvicorn only times out idle keep-alive connections *after* a response;
- at most ``max_connections`` open connections per worker: more are answered 503 with
  ``Retry-After`` and closed at once;
- its own refusals are JSON with the security headers, like every other answer.
"""

from __future__ import annotations

import asyncio
import http
import logging
import socket
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ci_ml.serve.app import BASE_HEADERS, dumps
from ci_ml.serve.settings import Limits

LOG = logging.getLogger("ci_ml.serve")


def raw_response(status: int, message: str, extra: tuple[tuple[bytes, bytes], ...] = ()
                 ) -> bytes:
    body = dumps({"error": message})
    phrase = http.HTTPStatus(status).phrase
    lines = [f"HTTP/1.1 {status} {phrase}".encode()]
    lines += [k + b": " + v for k, v in BASE_HEADERS]
    lines += [b"content-type: application/json", b"content-length: " + str(len(body)).encode(),
              b"connection: close", *(k + b": " + v for k, v in extra)]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


class HardenedProtocol(HttpToolsProtocol):
    """``uvicorn.Config(http=HardenedProtocol)``; limits come from ``config.ci_ml_limits``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ci_limits: Limits = getattr(self.config, "ci_ml_limits", None) or Limits()
        self._head_bytes = 0
        self._in_head = True
        self._deadline: asyncio.TimerHandle | None = None

    # -- connection ------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                # Without it, Nagle's algorithm and delayed ACKs add ~40 ms to a small answer.
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        if len(self.connections) > self.ci_limits.max_connections:
            LOG.warning("connection refused: %d open (max_connections)", len(self.connections))
            self._refuse(503, "too many connections, retry later", ((b"retry-after", b"1"),))
            return
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.ci_limits.request_timeout_s, self._timed_out)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _timed_out(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete:
            if self._in_head and self._head_bytes == 0 and self.cycle is not None:
                self.transport.close()      # an idle keep-alive connection: just close it
            else:
                self._refuse(408, "request not received in time")
        elif not self.cycle.response_started:
            # The body is still arriving too slowly: the app is waiting for it.
            self.cycle.disconnected = True
            self.cycle.message_event.set()
            self._refuse(408, "request not received in time")

    def _refuse(self, status: int, message: str,
                extra: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        if not self.transport.is_closing():
            self.transport.write(raw_response(status, message, extra))
            self.transport.close()

    # -- parsing ---------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():
            return
        if self._in_head:
            end = data.find(b"\r\n\r\n")
            self._head_bytes += len(data) if end < 0 else end
            if self._head_bytes > self.ci_limits.max_header_bytes:
                self._refuse(431, "request head too large")
                return
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True
        self._head_bytes = 0
        self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # A keep-alive connection now waits for its next request, within the same deadline.
        if not self.transport.is_closing() and self._deadline is None:
            self._arm()

    def send_400_response(self, msg: str) -> None:
        self._refuse(400, "malformed HTTP request")
