"""An OSV API on loopback, answering from an ``AdvisoryDB``: pip-audit's
``--vulnerability-service osv --osv-url`` then works with no internet at all.

pip-audit 2.10 POSTs one ``/v1/query`` per dependency (``{"package": {"name",
"ecosystem"}, "version"}``) and reads ``{"vulns": [...]}`` (or ``{}``);
``/v1/querybatch`` is served too, as osv.dev does, for other OSV clients.
Every accepted connection gets TCP_NODELAY: with Nagle's algorithm and delayed
ACKs a small request/response round trip costs ~40 ms instead of ~0.3 ms.
"""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import unquote

from ci_ml.advisories.store import AdvisoryDB
from ci_ml.errors import CiMlError

MAX_BODY = 1 << 20
MAX_BATCH = 1000


class QueryError(ValueError):
    """A malformed OSV query (answered with HTTP 400)."""


def _package_version(query: Any) -> tuple[str, str] | None:
    """(name, version) of a PyPI query; None for other ecosystems (no records here)."""
    if not isinstance(query, dict):
        raise QueryError("query must be a JSON object")
    if "commit" in query and "package" not in query:
        return None  # GIT ranges are not indexed: no record matches by commit here
    package = query.get("package")
    if not isinstance(package, dict):
        raise QueryError("query needs 'package'")
    version: Any = query.get("version")
    name: Any
    purl = package.get("purl")
    if isinstance(purl, str):
        if not purl.startswith("pkg:pypi/"):
            return None
        body = unquote(purl[len("pkg:pypi/"):].split("?")[0].split("#")[0])
        name, _, purl_version = body.partition("@")
        version = version or purl_version
    else:
        name = package.get("name")
        if str(package.get("ecosystem", "")).lower() != "pypi":
            return None
    if not isinstance(name, str) or not name or not isinstance(version, str) or not version:
        raise QueryError("query needs a package name and a version")
    return name, version


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive: pip-audit's session reuses the connection

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.connection.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY):
            self.server.count_nodelay()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def _send(self, status: int, payload: Any) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._send(404, {"code": 5, "message": "only POST /v1/query and /v1/querybatch"})

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self.close_connection = True
            self._send(413, {"code": 3, "message": "request too large"})
            return
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw or b"null")
            if self.path == "/v1/query":
                self._send(200, self.server.answer(body))
            elif self.path == "/v1/querybatch":
                self._send(200, self.server.answer_batch(body))
            else:
                self._send(404, {"code": 5, "message": f"no such endpoint {self.path}"})
        except (ValueError, QueryError) as exc:
            self._send(400, {"code": 3, "message": str(exc)})
        except CiMlError as exc:
            # A broken record in the mirror: tell the client, and remember it for the scanner.
            self.server.errors.append(exc)
            self._send(500, {"code": 13, "message": exc.message})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = False

    def __init__(self, db: AdvisoryDB, address: tuple[str, int]) -> None:
        super().__init__(address, _Handler)
        self.db = db
        self.errors: list[CiMlError] = []
        self.queries = 0
        self.nodelay_connections = 0
        self._count_lock = threading.Lock()

    def count_nodelay(self) -> None:
        with self._count_lock:
            self.nodelay_connections += 1

    def _match(self, query: Any) -> list[Any]:
        with self._count_lock:
            self.queries += 1
        pv = _package_version(query)
        if pv is None:
            return []
        return [a for a in self.db.query(*pv)]

    def answer(self, query: Any) -> dict[str, Any]:
        vulns = [dict(a.record) for a in self._match(query)]
        return {"vulns": vulns} if vulns else {}

    def answer_batch(self, body: Any) -> dict[str, Any]:
        queries = body.get("queries") if isinstance(body, dict) else None
        if not isinstance(queries, list) or len(queries) > MAX_BATCH:
            raise QueryError(f"querybatch needs 'queries': a list of at most {MAX_BATCH}")
        results = []
        for query in queries:
            found = [{"id": a.id, "modified": a.record.get("modified")} for a in self._match(query)]
            results.append({"vulns": found} if found else {})
        return {"results": results}


class OSVServer:
    """``with OSVServer(db) as server: ... server.query_url ...`` on 127.0.0.1, ephemeral port."""

    def __init__(self, db: AdvisoryDB, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = _Server(db, (host, port))
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05},
                                        name="ci-ml-osv", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        host = host.decode() if isinstance(host, bytes) else str(host)
        return f"http://{host}:{port}"

    @property
    def query_url(self) -> str:
        return f"{self.url}/v1/query"

    @property
    def queries(self) -> int:
        return self._server.queries

    @property
    def nodelay_connections(self) -> int:
        """Accepted connections with TCP_NODELAY confirmed on the server's socket."""
        return self._server.nodelay_connections

    @property
    def errors(self) -> list[CiMlError]:
        return list(self._server.errors)

    def start(self) -> OSVServer:
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()

    def __enter__(self) -> OSVServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
