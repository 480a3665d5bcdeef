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

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

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


class OneSendTransport:
    """A request cycle's view of the connection: the response head waits for the body.

    uvicorn writes a response's head and its body with two ``transport.write`` calls:
    two ``send`` system calls, two TCP segments, two wake-ups of the client. On a small
    prediction that second send was a third of the server's CPU per request
    (benchmarks/serve.py). Here the head is held until the body's write (or a close)
    and both go out in one. A HEAD answer has no body write: its head goes out at once,
    as does anything written before the response starts (``100 Continue``).
    """

    __slots__ = ("_transport", "_cycle", "_head", "_waiting")

    def __init__(self, transport: asyncio.Transport, cycle: RequestResponseCycle) -> None:
        self._transport = transport
        self._cycle = cycle
        self._head: bytes | None = None
        self._waiting = cycle.scope["method"] != "HEAD"

    def write(self, data: bytes) -> None:
        head = self._head
        if head is not None:
            self._head = None
            self._transport.write(head + data)
        elif self._waiting and self._cycle.response_started:
            self._waiting = False
            self._head = data
        else:
            self._transport.write(data)

    def close(self) -> None:
        head, self._head = self._head, None
        if head is not None:
            self._transport.write(head)
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class HardenedProtocol(HttpToolsProtocol):
    """``uvicorn.Config(http=HardenedProtocol)``; limits come from ``config.ci_ml_limits``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ci_limits: Limits = getattr(self.config, "ci_ml_limits", None) or Limits()
        self._head_bytes = 0
        self._in_head = True
        # The request deadline (loop time), or None while none runs. One timer per
        # connection checks it: moving a deadline is an assignment, not a new timer,
        # since re-arming a timer twice a request cost more than the answer's headers.
        self._deadline: float | None = None
        self._timer: asyncio.TimerHandle | None = None

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
        self._stop_timer()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._deadline = self.loop.time() + self.ci_limits.request_timeout_s
        if self._timer is None:
            self._timer = self.loop.call_at(self._deadline, self._check_deadline)

    def _disarm(self) -> None:
        self._deadline = None

    def _stop_timer(self) -> None:
        self._deadline = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check_deadline(self) -> None:
        self._timer = None
        deadline = self._deadline
        if deadline is None:
            return
        # Moved on since the timer was set (a timer may fire up to a millisecond early).
        if self.loop.time() < deadline - 0.001:
            self._timer = self.loop.call_at(deadline, self._check_deadline)
            return
        self._timed_out()

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
        cycle = self.cycle
        if cycle is not None and not isinstance(cycle.transport, OneSendTransport):
            cycle.transport = OneSendTransport(self.transport, cycle)  # type: ignore[assignment]

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
