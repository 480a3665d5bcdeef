"""The HTTP server in-process on a loopback port: answers, limits, headers, logging, draining."""

from __future__ import annotations

import http.client
import json
import logging
import socket
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest

from ci_ml.serve.app import SECURITY_HEADERS
from ci_ml.serve.model import ServedModel
from ci_ml.serve.server import RunningServer, start_background
from ci_ml.serve.settings import Limits, LogSettings, ServeSettings
from tests.serve.factory import expected


def request(srv: RunningServer, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    parts = urlsplit(srv.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        conn.request(method, path, body=body, headers=hdrs)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def predict(srv: RunningServer, inputs: Any) -> tuple[int, dict[str, str], Any]:
    body = json.dumps({"inputs": inputs}).encode()
    status, headers, body = request(srv, "POST", "/predict", body)
    return status, headers, json.loads(body)


def test_predict_matches_the_model(served: RunningServer) -> None:
    raw = [[1.0, 2.0, 3.0, 4.0], [-4.0, 0.0, 8.0, 1.5]]
    status, _, doc = predict(served, raw)
    assert status == 200
    labels, probs = expected(np.array(raw))
    assert doc["predictions"] == labels
    np.testing.assert_allclose(doc["probabilities"], probs, atol=2e-6)


def test_nested_input_in_the_model_shape(served: RunningServer) -> None:
    status, _, doc = predict(served, [[[[1.0, 2.0], [3.0, 4.0]]]])
    assert status == 200 and doc["predictions"] == expected(np.array([[1.0, 2, 3, 4]]))[0]


@pytest.mark.parametrize("method, path, body, headers, status", [
    ("GET", "/health", None, {}, 200),
    ("GET", "/ready", None, {}, 200),
    ("GET", "/nope", None, {}, 404),
    ("GET", "/predict", None, {}, 405),
    ("TRACE", "/", None, {}, 404),
    ("DELETE", "/predict", None, {}, 405),
    ("POST", "/predict", b'{"inputs": [[1,2,3,4]]}', {"Content-Type": "text/plain"}, 415),
    ("POST", "/predict", b'{"inputs": [[NaN,2,3,4]]}', {}, 422),
    ("POST", "/predict", b"{", {}, 400),
    ("POST", "/predict", b" " * 5000, {}, 413),
])
def test_every_answer_is_hardened_json(served: RunningServer, method: str, path: str,
                                       body: bytes | None, headers: dict[str, str],
                                       status: int) -> None:
    got, hdrs, payload = request(served, method, path, body, headers)
    assert got == status
    assert hdrs["content-type"] == "application/json"
    for name, value in SECURITY_HEADERS:
        assert hdrs[name.lower()] == value
    assert hdrs["server"] == "ci-ml"           # no version banner
    doc = json.loads(payload)
    assert isinstance(doc, dict)
    if status >= 400:
        assert "error" in doc and "Traceback" not in payload.decode()
    if status == 405:
        assert "allow" in hdrs


def test_missing_length_and_chunked_bodies(served: RunningServer) -> None:
    parts = urlsplit(served.url)
    body = b'{"inputs": [[1, 2, 3, 4]]}'
    with socket.create_connection((parts.hostname, parts.port), timeout=5) as sock:
        # A chunked body is framed by the parser and capped like any other.
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n" + b"%x\r\n" % len(body) + body
                     + b"\r\n0\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        chunk = b"9" * 3000
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n" + (b"%x\r\n" % len(chunk) + chunk
                                                              + b"\r\n") * 2 + b"0\r\n\r\n")
        answer = sock.recv(4096)
        assert answer.startswith(b"HTTP/1.1 413") and b"connection: close" in answer
    with socket.create_connection((parts.hostname, parts.port), timeout=5) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 411")


def test_oversized_body_gets_413_before_it_is_read(served: RunningServer) -> None:
    status, hdrs, body = request(served, "POST", "/predict", b"x" * 200_000)
    assert status == 413 and hdrs["connection"] == "close"
    assert b"exceeds the limit of 4096" in body


def test_bad_request_line_gets_json_without_echo(served: RunningServer) -> None:
    parts = urlsplit(served.url)
    with socket.create_connection((parts.hostname, parts.port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/9.<script>\r\n\r\n")
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 400") or answer.startswith(b"HTTP/1.1 505")
    assert b"<script>" not in answer and b"nosniff" in answer


def test_keep_alive_serves_many_requests_on_one_connection(served: RunningServer) -> None:
    parts = urlsplit(served.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
    body = json.dumps({"inputs": [[1, 2, 3, 4]]}).encode()
    for _ in range(5):
        conn.request("POST", "/predict", body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 200
        resp.read()
    sock = conn.sock
    conn.request("GET", "/health")
    conn.getresponse().read()
    assert conn.sock is sock      # same TCP connection throughout
    conn.close()


def test_an_internal_error_is_logged_not_sent(served: RunningServer,
                                              monkeypatch: pytest.MonkeyPatch,
                                              caplog: pytest.LogCaptureFixture) -> None:
    def boom(batch: Any) -> Any:
        raise RuntimeError("secret internal detail /srv/model/x.py line 3")

    monkeypatch.setattr(served.app.model, "predict", boom)
    with caplog.at_level(logging.ERROR, logger="ci_ml.serve"):
        status, hdrs, body = request(served, "POST", "/predict", b'{"inputs": [[1,2,3,4]]}')
    assert status == 500
    doc = json.loads(body)
    assert doc == {"error": "internal error", "request_id": hdrs["x-request-id"]}
    assert "secret" not in body.decode()
    assert "secret internal detail" in caplog.text and "Traceback" in caplog.text
    assert request(served, "GET", "/health")[0] == 200   # still serving


def test_openapi_document_describes_the_signature(served: RunningServer) -> None:
    status, _, body = request(served, "GET", "/openapi.json")
    doc = json.loads(body)
    assert status == 200 and doc["openapi"].startswith("3.")
    assert {"/predict", "/health", "/ready", "/openapi.json", "/v2/models/{name}"} \
        <= set(doc["paths"])
    req = doc["components"]["schemas"]["PredictRequest"]
    assert req["properties"]["inputs"]["maxItems"] == 8
    nested, flat = req["properties"]["inputs"]["items"]["oneOf"]
    assert (nested["minItems"], nested["items"]["minItems"], nested["items"]["items"]["minItems"]) \
        == (1, 2, 2)
    assert flat["minItems"] == flat["maxItems"] == 4
    resp = doc["components"]["schemas"]["PredictResponse"]["properties"]["predictions"]
    assert resp["items"]["enum"] == ["a", "b", "c"]
    assert doc["x-ci-ml"]["signature"]["sample_shape"] == [1, 2, 2]
    assert doc["x-ci-ml"]["limits"] == {"max_batch": 8, "max_body_bytes": 4096}


def test_connection_limit_answers_503(tiny_model: Path) -> None:
    settings = ServeSettings(port=0, limits=Limits(max_connections=1, request_timeout_s=5))
    with start_background(ServedModel(tiny_model), settings) as srv:
        parts = urlsplit(srv.url)
        hog = socket.create_connection((parts.hostname, parts.port))   # holds the only slot
        time.sleep(0.2)
        status, hdrs, _ = request(srv, "GET", "/health")
        assert status == 503 and hdrs["retry-after"] == "1"
        hog.close()
        deadline = time.monotonic() + 5
        while request(srv, "GET", "/health")[0] != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_drain_lets_in_flight_requests_finish(tiny_model: Path, monkeypatch: pytest.MonkeyPatch
                                              ) -> None:
    srv = start_background(ServedModel(tiny_model), ServeSettings(port=0))
    srv.app.inline_budget_s = 0.0      # this "slow model" runs where a slow model would
    real = srv.app.model.predict
    entered = threading.Event()

    def slow(batch: Any) -> Any:
        entered.set()
        time.sleep(0.5)
        return real(batch)

    monkeypatch.setattr(srv.app.model, "predict", slow)
    result: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: result.update(r=predict(srv, [[1, 2, 3, 4]])))
    worker.start()
    parts = urlsplit(srv.url)
    idle = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
    idle.request("GET", "/ready")
    assert idle.getresponse().read()            # an idle keep-alive connection stays open
    assert entered.wait(5)
    started = time.monotonic()
    srv.stop()
    worker.join(5)
    assert result["r"][0] == 200                 # the in-flight request was answered
    assert result["r"][1]["connection"] == "close"
    assert time.monotonic() - started < 5        # the idle connection did not hold the drain
    with pytest.raises(OSError):
        socket.create_connection((parts.hostname, parts.port), timeout=1)


def test_request_log_samples_and_rotates(tiny_model: Path, tmp_path: Path) -> None:
    log = tmp_path / "logs" / "requests.jsonl"
    settings = ServeSettings(port=0, log=LogSettings(path=log, sample_rate=0.5, max_bytes=1024))
    srv = start_background(ServedModel(tiny_model), settings)
    for i in range(20):
        predict(srv, [[i, 1, 2, 3]])
    for _ in range(2):
        request(srv, "POST", "/predict", b'{"inputs": [[NaN,1,2,3]]}')
    srv.stop()
    lines = [json.loads(x) for p in (log.with_name("requests.jsonl.1"), log) if p.exists()
             for x in p.read_text().splitlines()]
    assert srv.app.request_log.written == 11                # exactly half of 22 requests
    assert log.with_name("requests.jsonl.1").exists()       # rotated past max_bytes ...
    # ... keeping one old file (the last append may have rotated: no current file yet)
    assert 0 < len(lines) < 11 and (not log.exists() or log.stat().st_size < 1024)
    ok = [x for x in lines if x["status"] == 200]
    assert ok and all(len(x["inputs"][0]) == 4 and x["outputs"][0]["label"] in "abc" for x in ok)
    assert all(abs(sum(x["outputs"][0]["probabilities"]) - 1) < 1e-5 and x["latency_ms"] >= 0
               for x in ok)
    for x in lines:
        assert set(x) == {"id", "ts", "model_digest", "model_version", "route", "status",
                          "latency_ms", "inputs", "outputs"}
        assert x["ts"].endswith("Z") and x["route"] == "/predict"
        assert x["model_digest"] == srv.app.model.sha256 and x["model_version"] is None
    assert any(x["status"] == 422 and x["outputs"] is None for x in lines)


def test_request_ids_are_the_servers_own(served: RunningServer) -> None:
    """A client cannot choose the id its request is logged under (late labels join on it)."""
    ids = set()
    for _ in range(3):
        status, hdrs, body = request(served, "POST", "/predict", b'{"inputs": [[1, 2, 3, 4]]}',
                                     {"X-Request-Id": "chosen-by-client"})
        assert status == 200 and json.loads(body)["id"] == hdrs["x-request-id"]
        ids.add(hdrs["x-request-id"])
    assert len(ids) == 3 and "chosen-by-client" not in ids
