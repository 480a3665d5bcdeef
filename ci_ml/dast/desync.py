"""HTTP desync checks: does the target frame each request exactly as RFC 9112 says?

Behind a keep-alive proxy (an ingress), a server that reads a request's body as a second
request, or disagrees with the proxy on where a request ends, lets one client smuggle a
request into another client's connection. Each case sends raw bytes on one connection,
where the first request's body is itself a complete request to a unique path, and counts
the answers:

- ``190006-1``: a request the server refuses (405, 404, an unknown method) with a body;
- ``190006-2``: a GET with a body;
- ``190006-3``: ``Content-Length`` and ``Transfer-Encoding`` together (the server must
  refuse it, or answer and close the connection: RFC 9112 §6.1), and two different lengths;
- ``190006-4``: an obs-fold continuation line that reads as a ``Content-Length`` header
  when folding is ignored (the server must refuse it or unfold it: RFC 9112 §5.2).

A flaw is an answer to the smuggled request, or a connection kept open when the framing
was ambiguous, or a folded line taken for a header of its own.
"""

from __future__ import annotations

import os
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

from ci_ml.dast.catalog import rule
from ci_ml.dast.interface import Alert

MAX_READ = 256 * 1024


@dataclass(frozen=True)
class Case:
    ref: str                 # alertRef: 190006-N
    name: str                # what is tried, for the finding's attack field
    raw: bytes
    ambiguous: bool = False  # framing the server must refuse, or answer and close
    folded: bool = False     # the obs-fold case


@dataclass(frozen=True)
class Outcome:
    statuses: tuple[int, ...]       # every response read on the connection, in order
    smuggled: bool                  # one of them answers the smuggled request
    open_after: bool                # a follow-up request on the same connection was answered
    error: str | None = None


def _request(method: str, path: str, host: str, headers: list[str], body: bytes) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", "User-Agent: ci-ml-dast", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def cases(host: str, predict: str, health: str, marker: str) -> list[Case]:
    smuggled = _request("GET", marker, host, ["Content-Length: 0"], b"")
    cl = f"Content-Length: {len(smuggled)}"
    chunked = b"0\r\n\r\n" + smuggled
    return [
        Case("190006-1", f"DELETE {predict} (refused) with a request as its body",
             _request("DELETE", predict, host, [cl], smuggled)),
        Case("190006-1", "POST to an unknown path with a request as its body",
             _request("POST", "/ci-ml-dast-no-such-path", host, [cl], smuggled)),
        Case("190006-1", "unknown method CIMLDAST with a request as its body",
             _request("CIMLDAST", predict, host, [cl], smuggled)),
        Case("190006-2", f"GET {health} with a request as its body",
             _request("GET", health, host, [cl], smuggled)),
        Case("190006-3", "Content-Length and Transfer-Encoding: chunked together",
             _request("POST", predict, host, ["Content-Type: application/json",
                                               f"Content-Length: {len(chunked)}",
                                               "Transfer-Encoding: chunked"], chunked),
             ambiguous=True),
        Case("190006-3", "two different Content-Length headers",
             _request("POST", predict, host, ["Content-Type: application/json",
                                               "Content-Length: 0", cl], smuggled),
             ambiguous=True),
        Case("190006-4", f"GET {health} with an obs-fold line ' {cl}'",
             _request("GET", health, host, ["X-Ci-Ml-Dast: a", f" {cl}"], smuggled),
             folded=True),
    ]


class _Conn:
    """One raw connection; reads HTTP/1.1 responses off it, one at a time."""

    def __init__(self, host: str, port: int, https: bool, timeout: float) -> None:
        sock = socket.create_connection((host, port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if https:
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
        self.sock = sock
        self.buf = b""
        self.closed = False

    def _fill(self, deadline: float) -> bool:
        if self.closed or len(self.buf) > MAX_READ:
            return False
        self.sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = self.sock.recv(65536)
        except TimeoutError:
            return False
        except OSError:
            self.closed = True
            return False
        if not chunk:
            self.closed = True
            return False
        self.buf += chunk
        return True

    def _until(self, token: bytes, deadline: float) -> int:
        while token not in self.buf:
            if not self._fill(deadline):
                return -1
        return self.buf.index(token)

    def response(self, wait_s: float, head_method: bool = False) -> tuple[int, bytes] | None:
        """(status, body) of the next response, or None if none starts within ``wait_s``."""
        deadline = time.monotonic() + wait_s
        end = self._until(b"\r\n\r\n", deadline)
        if end < 0:
            return None
        head, self.buf = self.buf[:end].decode("latin-1"), self.buf[end + 4:]
        lines = head.split("\r\n")
        try:
            status = int(lines[0].split(" ", 2)[1])
        except (IndexError, ValueError):
            return (0, b"")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if head_method or status in (204, 304) or 100 <= status < 200:
            return status, b""
        if headers.get("transfer-encoding", "").lower().endswith("chunked"):
            return status, self._chunked(deadline + 2)
        if "content-length" in headers:
            try:
                n = int(headers["content-length"])
            except ValueError:
                n = 0
            while len(self.buf) < n and self._fill(deadline + 2):
                pass
            body, self.buf = self.buf[:n], self.buf[n:]
            return status, body
        while self._fill(deadline + 2):     # no length: the body runs to the close
            pass
        body, self.buf = self.buf, b""
        self.closed = True
        return status, body

    def _chunked(self, deadline: float) -> bytes:
        body = b""
        while True:
            end = self._until(b"\r\n", deadline)
            if end < 0:
                return body
            size = int(self.buf[:end].split(b";")[0].strip() or b"0", 16)
            self.buf = self.buf[end + 2:]
            while len(self.buf) < size + 2 and self._fill(deadline):
                pass
            body += self.buf[:size]
            self.buf = self.buf[size + 2:]
            if size == 0:
                return body

    def send(self, data: bytes) -> bool:
        try:
            self.sock.sendall(data)
            return True
        except OSError:
            self.closed = True
            return False

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def run_case(url: str, case: Case, marker: str, health: str, timeout: float,
             idle_s: float = 0.3) -> Outcome:
    parts = urlsplit(url)
    https = parts.scheme == "https"
    host, port = parts.hostname or "127.0.0.1", parts.port or (443 if https else 80)
    try:
        conn = _Conn(host, port, https, timeout)
    except OSError as exc:
        return Outcome((), False, False, f"connect failed: {type(exc).__name__}")
    statuses: list[int] = []
    smuggled = False
    try:
        if not conn.send(case.raw):
            return Outcome((), False, False, "send failed")
        wait = timeout
        while True:
            got = conn.response(wait)
            if got is None:
                break
            status, body = got
            statuses.append(status)
            smuggled = smuggled or (len(statuses) > 1 and marker.encode() in body) or \
                (len(statuses) > 1 and status == 404)
            wait = idle_s          # any further answer comes right after the first
        open_after = False
        if statuses and not conn.closed:
            # A follow-up on the same connection: answered means the connection stayed open.
            # An answer to the smuggled request that came late arrives before the follow-up's.
            follow = _request("GET", health, parts.netloc or host, [], b"")
            if conn.send(follow):
                late = [conn.response(min(timeout, 3.0)), conn.response(idle_s)]
                answers = [r for r in late if r is not None]
                open_after = bool(answers)
                if len(answers) > 1:
                    statuses.append(answers[0][0])
                    smuggled = True
        return Outcome(tuple(statuses), smuggled, open_after)
    finally:
        conn.close()


def judge(case: Case, outcome: Outcome) -> str | None:
    """The evidence of a flaw, or None when the server framed the case correctly."""
    got = ", ".join(map(str, outcome.statuses)) or "none"
    if len(outcome.statuses) > 1 and not case.folded:   # unfolding, then answering twice, is right
        return (f"{len(outcome.statuses)} responses ({got}) to one request: its body was "
                "answered as a request of its own")
    if not outcome.statuses:
        return None
    first = outcome.statuses[0]
    if case.ambiguous and outcome.open_after:
        return (f"answered {first} and kept the connection open: a proxy that frames the "
                "request the other way sees the rest as a new request")
    if case.folded and len(outcome.statuses) == 1 and first < 400 and outcome.open_after:
        return (f"answered {first} with one response: the folded line was taken as a "
                "Content-Length header of its own (neither refused nor unfolded)")
    return None


def check(url: str, predict: str, health: str, timeout: float) -> Iterator[Alert]:
    """Every desync flaw found, one alert per case that shows one."""
    parts = urlsplit(url)
    marker = f"/ci-ml-dast-desync-{os.urandom(4).hex()}"
    prefix = parts.path.rstrip("/")
    for case in cases(parts.netloc, prefix + predict, prefix + health, prefix + marker):
        outcome = run_case(url, case, marker, prefix + health, timeout)
        evidence = judge(case, outcome)
        if evidence:
            method, path = case.raw.split(b" ", 2)[:2]
            yield rule("190006").alert(url.rstrip("/") + path.decode("latin-1")[len(prefix):],
                                       method=method.decode("latin-1"), param=case.ref,
                                       attack=case.name, evidence=evidence, alert_ref=case.ref)
