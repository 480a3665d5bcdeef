"""A stand-in for a ZAP daemon at the network seam: it answers ZAP's JSON API from recorded files.

zapv2 sends every API call through ZAP's proxy port as ``GET http://zap/JSON/...``; this
server accepts those absolute-form requests, checks the ``X-ZAP-API-Key`` header like ZAP
does, and answers from fixtures/recorded/zap/api/ (numbered files in sequence). Anything
else it is asked to proxy (zapv2's ``urlopen`` of the target) gets a plain 200.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

RECORDED = Path(__file__).resolve().parents[2] / "fixtures" / "recorded" / "zap" / "api"


class FakeZap:
    def __init__(self, api_key: str | None, recorded: Path = RECORDED) -> None:
        self.api_key = api_key
        self.calls: list[tuple[str, dict[str, str]]] = []
        self.proxied: list[str] = []
        self.keys_seen: list[str | None] = []
        self._served: dict[str, int] = {}
        self.answers: dict[str, list[Any]] = {}
        for f in sorted(recorded.glob("*.json")):
            name, _, rest = f.name.partition(".")
            self.answers.setdefault(name, []).append(json.loads(f.read_text()))
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                fake.handle(self)

            do_POST = do_GET

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def handle(self, h: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(h.path)
        if parts.hostname != "zap":
            self.proxied.append(h.path)
            self._send(h, 200, b"proxied", "text/plain")
            return
        self.keys_seen.append(h.headers.get("X-ZAP-API-Key"))
        segs = [s for s in parts.path.split("/") if s]       # JSON, component, type, name
        name = "_".join(segs[1:4])
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        self.calls.append((name, query))
        if self.api_key is not None and h.headers.get("X-ZAP-API-Key") != self.api_key:
            self._send(h, 400, json.dumps(self.answers["error_bad_api_key"][0]).encode())
            return
        answers = self.answers.get(name)
        if not answers:
            self._send(h, 400, b'{"code": "bad_view", "message": "No Implementor"}')
            return
        index = self._served.get(name, 0)
        self._served[name] = index + 1
        doc = answers[min(index, len(answers) - 1)]
        if name == "core_view_alerts":
            start, count = int(query.get("start", 0)), int(query.get("count", 0) or 10**9)
            doc = {"alerts": doc["alerts"][start:start + count]}
        self._send(h, 200, json.dumps(doc).encode())

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, status: int, body: bytes,
              ctype: str = "application/json; charset=UTF-8") -> None:
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def names(self) -> list[str]:
        return [n for n, _ in self.calls]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
