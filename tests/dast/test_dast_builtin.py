"""The built-in engine against real servers on loopback: ours, the weak fixture, a hanging one."""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ci_ml.dast.builtin import BuiltinEngine
from ci_ml.dast.findings import findings_from
from ci_ml.dast.http import Client
from ci_ml.dast.interface import DastError, DastOptions
from ci_ml.dast.rules import Rules
from ci_ml.dast.target import discover
from ci_ml.scan.interface import Severity
from ci_ml.serve.server import RunningServer

WEAK_SERVER_IDS = {"10020", "10021", "10036", "10037", "10038", "10010", "10054", "10098",
                   "90022", "40008", "190001", "190005", "190006"}


def scan(url: str, **options: float) -> tuple[list, object]:  # type: ignore[type-arg]
    client = Client(url, float(options.get("timeout_s", 5.0)))
    target = discover(client)
    report = BuiltinEngine().scan(target, DastOptions(**options))  # type: ignore[arg-type]
    return list(findings_from(report, Rules())), report


def test_our_server_has_nothing_medium_or_worse_and_survives(served: RunningServer) -> None:
    findings, report = scan(served.url)
    assert [f for f in findings if f.severity >= Severity.MEDIUM] == []
    assert report.requests > 50                              # the probes really ran
    assert Client(served.url, 5).send("GET", "/health").status == 200


def test_signature_comes_from_openapi(served: RunningServer) -> None:
    target = discover(Client(served.url, 5))
    assert target.spec is not None
    assert (target.spec.sample_shape, target.spec.max_batch) == ((1, 2, 2), 8)
    assert "/health" in target.paths and target.openapi_url == served.url + "/openapi.json"


def test_weak_server_expected_rules(weak_server: str) -> None:
    findings, report = scan(weak_server)
    found = {f.id for f in findings}
    assert WEAK_SERVER_IDS <= found
    crash = next(f for f in findings if f.id == "190001")
    assert crash.severity is Severity.HIGH and "NaN" in crash.raw["attack"]
    leak = next(f for f in findings if f.id == "90022" and f.severity is Severity.MEDIUM)
    assert "Traceback" in leak.raw["evidence"] and leak.raw["method"] == "POST"
    banner = next(f for f in findings if f.id == "10036")
    assert banner.raw["evidence"].startswith("BaseHTTP/") and banner.aliases == ("CWE-497",)
    assert any("stopped answering" in n for n in report.notes)  # type: ignore[attr-defined]


def test_desync_flaws_of_the_weak_server_with_evidence(weak_server: str) -> None:
    findings, _ = scan(weak_server)
    desync = {(f.raw["alertRef"], f.raw["method"]): f for f in findings if f.id == "190006"}
    assert {("190006-1", "DELETE"), ("190006-1", "POST"), ("190006-2", "GET"),
            ("190006-3", "POST")} <= set(desync)
    refused = desync[("190006-1", "DELETE")]
    assert refused.severity is Severity.HIGH and refused.aliases == ("CWE-444",)
    assert "2 responses (405, 404)" in refused.raw["evidence"]
    assert "kept the connection open" in desync[("190006-3", "POST")].raw["evidence"] \
        or "2 responses" in desync[("190006-3", "POST")].raw["evidence"]


def test_desync_finds_a_naive_parser_taking_folded_lines_as_headers(naive_server: str) -> None:
    from ci_ml.dast import desync

    alerts = list(desync.check(naive_server, "/predict", "/health", 3.0))
    refs = {a.alert_ref for a in alerts}
    assert refs == {"190006-3", "190006-4"}
    fold = next(a for a in alerts if a.alert_ref == "190006-4")
    assert "taken as a Content-Length header" in fold.evidence and fold.method == "GET"


def test_desync_finds_nothing_in_our_server(served: RunningServer) -> None:
    from ci_ml.dast import desync

    assert list(desync.check(served.url, "/predict", "/health", 3.0)) == []


def test_passive_only_sends_no_attacks(weak_server: str) -> None:
    findings, report = scan(weak_server, active=False)
    assert {f.id for f in findings}.isdisjoint({"40008", "190001", "190005", "190006"})
    assert report.requests < 10                              # type: ignore[attr-defined]
    assert Client(weak_server, 5).send("GET", "/health").status == 200


@pytest.fixture
def hanging_server() -> Iterator[str]:
    """Answers GETs; never answers the POST body "not json" (but stays up)."""
    release = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if body == b"not json":
                release.wait(10)
            self.send_response(400)
            self.send_header("Content-Length", "0")
            self.end_headers()

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    release.set()
    httpd.shutdown()
    httpd.server_close()


def test_hang_is_reported_while_the_server_stays_up(hanging_server: str) -> None:
    started = time.monotonic()
    findings, _ = scan(hanging_server, timeout_s=0.5)
    hang = [f for f in findings if f.id == "190002"]
    assert hang and hang[0].severity is Severity.MEDIUM and "within 0.5s" in hang[0].raw["evidence"]
    assert not any(f.id == "190001" for f in findings)
    assert time.monotonic() - started < 60


def test_unreachable_target_is_an_error_not_a_clean_scan() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DastError, match="did not answer"):
        discover(Client(f"http://127.0.0.1:{port}", 2))


class _ResetWhileConnecting(http.client.HTTPConnection):
    """The OS's side of a target shedding load: the connection is reset as it is made."""

    def connect(self) -> None:
        raise ConnectionResetError(104, "Connection reset by peer")


def test_a_connection_reset_while_connecting_is_a_reset_not_a_crash(
        served: RunningServer) -> None:
    """Seen in a full run against the weak server: http.client leaves no socket behind, and
    reading the answer from it raised AttributeError out of the scan."""
    client = Client(served.url, 5)
    client._connection = lambda timeout: _ResetWhileConnecting(  # type: ignore[method-assign]
        client.host, client.port, timeout=timeout)
    exchange = client.send("GET", "/health")
    assert exchange.error == "reset" and not exchange.answered
    assert not client.alive("/health")            # three resets: not answering
