"""The request path's JSON (orjson) means exactly what the standard library's would, and a
response's head and body leave in one write."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path
from typing import Any

import pytest

from ci_ml.serve import jsonio
from ci_ml.serve.model import ServedModel
from ci_ml.serve.protocol import OneSendTransport
from ci_ml.serve.server import start_background
from ci_ml.serve.settings import ServeSettings
from ci_ml.serve.validation import RequestError, parse_json

STDLIB = json.JSONDecoder()

# Bodies where orjson alone would answer differently from the standard library (or not
# at all): each must decode to what the standard library decodes, or fail as it fails.
DISAGREEING = [
    b'{"inputs": [[18446744073709551616, 1, 2, 3]]}',        # past 64 bits: orjson -> float
    b'{"inputs": [[-9223372036854775809, 1, 2, 3]]}',
    b'{"inputs": [[' + b"1" * 400 + b', 1, 2, 3]]}',
    b'{"inputs": [[1e400, 1, 2, 3]]}',                        # stdlib: inf (the decoder's 422)
    b'{"inputs": [["\\ud800", 1, 2, 3]]}',                    # lone surrogate
    b'{"a": 1, "a": 2}',
    b'[-0, 0.1, 1E5, 5e-324, 1.7976931348623157e308]',
]


@pytest.mark.parametrize("body", DISAGREEING)
def test_decoding_means_what_the_standard_library_means(body: bytes) -> None:
    expected = STDLIB.decode(body.decode("utf-8"))
    got = jsonio.loads(body, STDLIB)
    assert got == expected or (got != got and expected != expected)
    assert json.dumps(got) == json.dumps(expected)      # same types: an int stays an int


def test_big_integers_stay_exact_through_the_server_parser() -> None:
    doc = parse_json(b'{"inputs": [[18446744073709551616, 1]]}')
    assert doc["inputs"][0][0] == 2**64 and type(doc["inputs"][0][0]) is int


@pytest.mark.parametrize("body, status, message", [
    (b'{"inputs": [[NaN, 1]]}', 422, "non-finite number NaN"),
    (b'{"inputs": [[-Infinity, 1]]}', 422, "non-finite number -Infinity"),
    (b'\xef\xbb\xbf{"inputs": []}', 400, "malformed JSON: Expecting value (line 1, column 1)"),
    (b"[" * 1100 + b"]" * 1100, 400, "nested too deeply"),       # past orjson's 1024 too
    (b'{"inputs": [1,]}', 400, "malformed JSON: Expecting value (line 1, column 15)"),
    (b"\xc3\x28", 400, "not UTF-8 (byte 0)"),
])
def test_refusals_keep_the_documented_messages(body: bytes, status: int, message: str) -> None:
    with pytest.raises(RequestError) as err:
        parse_json(body)
    assert err.value.status == status and message in err.value.message


@pytest.mark.parametrize("obj", [
    {"id": "a-000001", "predictions": ["3"], "probabilities": [[0.1, 0.9]]},
    {"error": "caf\u00e9 \u2603", "n": 2**64, "nested": [None, True, 1e-7]},
    {1: "int key"},
    {"s": "\ud800"},
])
def test_encoding_round_trips_like_the_standard_library(obj: Any) -> None:
    out = jsonio.dumps(obj)
    assert json.loads(out) == json.loads(json.dumps(obj))


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_floats_are_refused_not_written_as_null(value: float) -> None:
    with pytest.raises(ValueError):
        jsonio.dumps({"predictions": [value]})


class _Recorder:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


class _Cycle:
    def __init__(self, method: str) -> None:
        self.scope = {"method": method}
        self.response_started = False


@pytest.mark.parametrize("method, writes", [
    ("POST", [b"100 Continue", b"HEAD" + b"BODY", b"MORE"]),
    ("HEAD", [b"100 Continue", b"HEAD", b"BODY", b"MORE"]),
])
def test_the_head_waits_for_the_body(method: str, writes: list[bytes]) -> None:
    real, cycle = _Recorder(), _Cycle(method)
    out = OneSendTransport(real, cycle)  # type: ignore[arg-type]
    out.write(b"100 Continue")            # before the response: at once
    cycle.response_started = True
    out.write(b"HEAD")
    out.write(b"BODY")
    out.write(b"MORE")
    assert real.writes == writes
    assert not out.is_closing()           # everything else is the connection's own


def test_a_close_sends_a_held_head_first() -> None:
    real, cycle = _Recorder(), _Cycle("GET")
    out = OneSendTransport(real, cycle)  # type: ignore[arg-type]
    cycle.response_started = True
    out.write(b"HEAD")
    out.close()
    assert real.writes == [b"HEAD"] and real.closed


def _data_segments_in(sock: socket.socket) -> int:
    """Linux's count of TCP segments with data this socket received (tcp_info)."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    return int.from_bytes(info[152:156], sys.byteorder)   # tcpi_data_segs_in (Linux 4.6+)


def _answer(sock: socket.socket, request: bytes) -> bytes:
    sock.sendall(request)
    data = b""
    while True:
        data += sock.recv(65536)
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep:
            length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:"))
            if len(body) >= length:
                return data


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="tcp_info is Linux's")
def test_an_answer_is_one_tcp_segment(tiny_model: Path) -> None:
    """Head and body leave in one write: one segment per answer, not two (the client's
    second wake-up and the server's second send are gone)."""
    body = b'{"inputs": [[1, 2, 3, 4]]}'
    request = (b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    with start_background(ServedModel(tiny_model), ServeSettings(port=0)) as srv:
        host, port = srv.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            assert b'"predictions"' in _answer(sock, request)
            before = _data_segments_in(sock)
            for _ in range(20):
                assert b'"predictions"' in _answer(sock, request)
            assert _data_segments_in(sock) - before == 20
