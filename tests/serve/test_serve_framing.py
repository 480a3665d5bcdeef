"""Request framing on raw sockets: one request in, exactly one answer out, a sane connection.

These are the cases that made the stdlib server answer a request's body as a second
request (request smuggling behind a keep-alive proxy), plus the classic ambiguous
framings. After each, the connection is either closed or still in step: a follow-up
request on it gets exactly its own answer.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from ci_ml.serve.server import RunningServer, load_model, start_background
from ci_ml.serve.settings import Limits, ServeSettings

SMUGGLED = b"GET /smuggled-by-test HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n"
CL = b"Content-Length: %d" % len(SMUGGLED)
CHUNKED = b"0\r\n\r\n" + SMUGGLED
STATUS = re.compile(rb"(?:^|\r\n\r\n|})HTTP/1\.[01] (\d{3}) ")


def raw(request_line: bytes, *headers: bytes, body: bytes = b"", eol: bytes = b"\r\n") -> bytes:
    return eol.join([request_line, b"Host: t", *headers]) + eol + eol + body


CASES = {
    "405 with a body": raw(b"DELETE /predict HTTP/1.1", CL, body=SMUGGLED),
    "404 with a body": raw(b"POST /nowhere HTTP/1.1", CL, body=SMUGGLED),
    "unknown method with a body": raw(b"CIMLTEST /predict HTTP/1.1", CL, body=SMUGGLED),
    "GET with a body": raw(b"GET /health HTTP/1.1", CL, body=SMUGGLED),
    "HEAD with a body": raw(b"HEAD /health HTTP/1.1", CL, body=SMUGGLED),
    "OPTIONS with a body": raw(b"OPTIONS /predict HTTP/1.1", CL, body=SMUGGLED),
    "CL then TE": raw(b"POST /predict HTTP/1.1", b"Content-Type: application/json",
                      b"Content-Length: %d" % len(CHUNKED), b"Transfer-Encoding: chunked",
                      body=CHUNKED),
    "TE then CL": raw(b"POST /predict HTTP/1.1", b"Transfer-Encoding: chunked",
                      b"Content-Length: 3", body=CHUNKED),
    "two lengths": raw(b"POST /predict HTTP/1.1", b"Content-Length: 0", CL, body=SMUGGLED),
    "obs-fold Content-Length": raw(b"GET /health HTTP/1.1", b"X-Test: a", b" " + CL,
                                   body=SMUGGLED),
    "obs-fold Transfer-Encoding": raw(b"POST /predict HTTP/1.1",
                                      b"Content-Length: %d" % len(CHUNKED),
                                      b"Transfer-Encoding:", b" chunked", body=CHUNKED),
    "space before colon": raw(b"POST /predict HTTP/1.1", b"Content-Length: %d" % len(CHUNKED),
                              b"Transfer-Encoding : chunked", body=CHUNKED),
    "TE xchunked": raw(b"POST /predict HTTP/1.1", b"Content-Length: %d" % len(CHUNKED),
                       b"Transfer-Encoding: xchunked", body=CHUNKED),
    "bare LF": raw(b"GET /health HTTP/1.1", CL, body=SMUGGLED, eol=b"\n"),
    "signed length": raw(b"POST /predict HTTP/1.1", b"Content-Length: +%d" % len(SMUGGLED),
                         body=SMUGGLED),
    "bad chunk size": raw(b"POST /predict HTTP/1.1", b"Transfer-Encoding: chunked",
                          body=b"zz\r\n" + SMUGGLED),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    from tests.serve.factory import make_model

    model = make_model(tmp_path_factory.mktemp("framing") / "m")
    settings = ServeSettings(port=0, limits=Limits(request_timeout_s=2, max_header_bytes=4096))
    srv = start_background(load_model(model, settings), settings)
    yield srv
    srv.stop()


def exchange(url: str, data: bytes, idle: float = 0.8) -> tuple[bytes, bool, socket.socket]:
    """Send ``data`` on a new connection; read until the server closes or stays quiet."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=5)
    sock.sendall(data)
    got, closed = b"", False
    deadline = time.monotonic() + 5
    sock.settimeout(idle)
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:
            closed = True
            break
        if not chunk:
            closed = True
            break
        got += chunk
    return got, closed, sock


@pytest.mark.parametrize("name", list(CASES))
def test_one_answer_and_a_sane_connection(server: RunningServer, name: str) -> None:
    got, closed, sock = exchange(server.url, CASES[name])
    try:
        statuses = STATUS.findall(got)
        assert len(statuses) == 1, (name, got[:600])           # never an answer to the body
        assert b"smuggled-by-test" not in got
        if not closed:
            # Still open: the connection must be in step, answering the next request itself.
            sock.sendall(b"GET /ready HTTP/1.1\r\nHost: t\r\n\r\n")
            follow = b""
            sock.settimeout(2)
            while b'"status":"ready"' not in follow:
                chunk = sock.recv(65536)
                assert chunk, (name, follow)
                follow += chunk
            assert STATUS.findall(follow) == [b"200"] and follow.startswith(b"HTTP/1.1 200")
        else:
            assert int(statuses[0]) >= 400              # closing is for refusals only
    finally:
        sock.close()


@pytest.mark.parametrize("name", ["CL then TE", "TE then CL", "two lengths",
                                  "obs-fold Content-Length", "obs-fold Transfer-Encoding",
                                  "space before colon", "bare LF"])
def test_ambiguous_framing_is_refused_and_closed(server: RunningServer, name: str) -> None:
    got, closed, sock = exchange(server.url, CASES[name])
    sock.close()
    assert got.startswith(b"HTTP/1.1 400") and closed
    assert b"nosniff" in got and b'{"error":' in got     # hardened JSON, like every answer


def test_head_too_large_gets_431(server: RunningServer) -> None:
    got, closed, sock = exchange(server.url, b"GET /health HTTP/1.1\r\nHost: t\r\nX-Pad: "
                                 + b"a" * 8000 + b"\r\n\r\n")
    sock.close()
    assert got.startswith(b"HTTP/1.1 431") and closed


def test_slow_request_is_cut_off(server: RunningServer) -> None:
    parts = urlsplit(server.url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: t\r\n")    # ... and never the rest
        started = time.monotonic()
        sock.settimeout(10)
        answer = sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 408")
        assert time.monotonic() - started < 8
        assert sock.recv(65536) == b""                             # then closed
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        # A body that never completes is cut off the same way.
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{")
        sock.settimeout(10)
        answer = sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 408") or answer == b""


def test_pipelined_requests_are_answered_in_order(server: RunningServer) -> None:
    body = b'{"inputs": [[1, 2, 3, 4]]}'
    predict = raw(b"POST /predict HTTP/1.1", b"Content-Type: application/json",
                  b"Content-Length: %d" % len(body), body=body)
    got, closed, sock = exchange(server.url, predict + raw(b"GET /nowhere HTTP/1.1") + predict)
    sock.close()
    assert [int(s) for s in STATUS.findall(got)] == [200, 404, 200] and not closed


def test_more_connections_than_the_cap_get_503(tmp_path: Path) -> None:
    from tests.serve.factory import make_model

    settings = ServeSettings(port=0, limits=Limits(max_connections=2, request_timeout_s=5))
    with start_background(load_model(make_model(tmp_path / "m"), settings), settings) as srv:
        parts = urlsplit(srv.url)
        hogs = [socket.create_connection((parts.hostname, parts.port)) for _ in range(2)]
        time.sleep(0.2)
        got, closed, sock = exchange(srv.url, b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
        sock.close()
        for hog in hogs:
            hog.close()
    assert got.startswith(b"HTTP/1.1 503") and b"retry-after: 1" in got.lower() and closed
