"""A local stand-in of the CI systems' APIs that start pipelines: it records each call and
checks its credentials the way GitHub (``Authorization: Bearer``) and GitLab (the trigger
``token`` form field) do. Started by the tests on 127.0.0.1; nothing leaves the machine."""

from __future__ import annotations

import json
import re
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

GITHUB_WORKFLOW = re.compile(r"^/repos/([^/]+)/([^/]+)/actions/workflows/([^/]+)/dispatches$")
GITHUB_REPOSITORY = re.compile(r"^/repos/([^/]+)/([^/]+)/dispatches$")
GITLAB_TRIGGER = re.compile(r"^/api/v4/projects/([^/]+)/trigger/pipeline$")


@dataclass
class Call:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int

    def json(self) -> Any:
        return json.loads(self.body)

    def form(self) -> dict[str, str]:
        return {k: v[0] for k, v in urllib.parse.parse_qs(self.body.decode()).items()}


@dataclass
class CiApi:
    token: str
    calls: list[Call] = field(default_factory=list)
    url: str = ""
    redirect_to: str | None = None    # answer every call with a redirect there

    def _answer(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        if self.redirect_to:
            return 307, b""
        if GITHUB_WORKFLOW.match(path) or GITHUB_REPOSITORY.match(path):
            if headers.get("authorization") != f"Bearer {self.token}":
                return 401, b'{"message": "Bad credentials"}'
            try:
                doc = json.loads(body)
            except ValueError:
                return 400, b'{"message": "Problems parsing JSON"}'
            if GITHUB_WORKFLOW.match(path) and not isinstance(doc.get("ref"), str):
                return 422, b'{"message": "ref is required"}'
            if GITHUB_REPOSITORY.match(path) and not doc.get("event_type"):
                return 422, b'{"message": "event_type is required"}'
            return 204, b""
        match = GITLAB_TRIGGER.match(path)
        if match:
            form = {k: v[0] for k, v in urllib.parse.parse_qs(body.decode()).items()}
            if form.get("token") != self.token:
                return 404, b'{"message": "404 Not Found"}'
            return 201, json.dumps({"id": len(self.calls) + 1, "ref": form.get("ref"),
                                    "status": "created"}).encode()
        return 404, b'{"message": "Not Found"}'


@contextmanager
def ci_api(token: str) -> Iterator[CiApi]:
    api = CiApi(token)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, answer = api._answer(self.path, headers, body)
            api.calls.append(Call(self.path, headers, body, status))
            self.send_response(status)
            if status == 307 and api.redirect_to:
                self.send_header("Location", api.redirect_to)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    api.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield api
    finally:
        server.shutdown()
        server.server_close()
