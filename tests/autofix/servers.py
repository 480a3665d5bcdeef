"""A loopback HTTP server whose answer the test chooses: OSV's empty answer, an error
status, or a connection closed before any answer (what a flaky registry does)."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class Flaky:
    def __init__(self) -> None:
        self.status = 200        # 200 answers {} (OSV: no vulnerabilities)
        self.drop = False        # close the connection without answering
        self.requests = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self) -> None:
                outer.requests += 1
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                if outer.drop:
                    self.close_connection = True
                    self.connection.close()
                    return
                body = b"{}" if outer.status == 200 else b'{"error": "try later"}'
                self.send_response(outer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer  # noqa: N815

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextmanager
def flaky_server() -> Iterator[Flaky]:
    flaky = Flaky()
    thread = threading.Thread(target=flaky.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield flaky
    finally:
        flaky.server.shutdown()
        flaky.server.server_close()
