"""The HTTP server: stdlib ``ThreadingHTTPServer``, HTTP/1.1 keep-alive, JSON in and out.

Hardening, in one place:
- every response (errors included) carries the security headers below, a JSON body
  and no version banner; a request never gets a traceback back (it is logged here);
- bodies need ``Content-Length`` and ``application/json`` and are capped before
  they are read; batches are capped; values must be finite numbers of the right shape;
- sockets time out; at most ``max_connections`` are served at once (more get 503);
- SIGTERM drains: /ready turns 503, idle keep-alive connections close, in-flight
  requests finish (up to ``drain_timeout_s``), the request log is flushed.
TCP_NODELAY is set on accepted sockets: without it, Nagle plus delayed ACKs add ~40 ms.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import signal
import socket
import threading
import time
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

from ci_ml.serve.model import ServedModel
from ci_ml.serve.openapi import build_openapi
from ci_ml.serve.requestlog import RequestLog
from ci_ml.serve.settings import ServeSettings
from ci_ml.serve.validation import (
    RequestError,
    check_prepared,
    parse_inputs,
    parse_json,
    request_rows,
)

LOG = logging.getLogger("ci_ml.serve")

SECURITY_HEADERS: tuple[tuple[str, str], ...] = (
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'"),
    ("Cache-Control", "no-store"),
    ("Referrer-Policy", "no-referrer"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Cross-Origin-Embedder-Policy", "require-corp"),
    ("Permissions-Policy", "camera=(), geolocation=(), microphone=(), payment=(), usb=()"),
)
SERVER_NAME = "ci-ml"
ROUTES = {"/predict": ("POST",), "/health": ("GET", "HEAD"), "/ready": ("GET", "HEAD"),
          "/openapi.json": ("GET", "HEAD")}


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode("utf-8")


class ModelHTTPServer(ThreadingHTTPServer):
    daemon_threads = False     # in-flight requests finish on shutdown
    block_on_close = False     # we join handlers ourselves, with a deadline
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, model: ServedModel, settings: ServeSettings, title: str = "") -> None:
        self.model = model
        self.settings = settings
        self.draining = False
        self.slots = threading.BoundedSemaphore(settings.limits.max_connections)
        self.request_log = RequestLog(settings.log.path, settings.log.sample_rate,
                                      settings.log.max_bytes)
        self.openapi = _dumps(build_openapi(model.signature, settings.limits, model.sha256,
                                            title or f"ci-ml model server ({model.path.name})"))
        self._ids = itertools.count(1)
        self._id_prefix = os.urandom(3).hex()
        self._conn_lock = threading.Lock()
        self._connections: set[Handler] = set()
        self._idle = threading.Condition(self._conn_lock)
        self.requests_served = 0
        super().__init__((settings.host, settings.port), Handler)

    # -- connection accounting -------------------------------------------------------------
    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        shown = host if isinstance(host, str) and ":" not in host else f"[{host!s}]"
        return f"http://{shown}:{port}"

    def next_request_id(self) -> str:
        return f"{self._id_prefix}-{next(self._ids):06d}"

    def track(self, handler: Handler) -> None:
        with self._conn_lock:
            self._connections.add(handler)

    def untrack(self, handler: Handler) -> None:
        with self._conn_lock:
            self._connections.discard(handler)
            self._idle.notify_all()

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            self._reject_busy(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def _reject_busy(self, request: socket.socket) -> None:
        body = _dumps({"error": "too many connections, retry later"})
        head = [f"HTTP/1.1 503 {HTTPStatus(503).phrase}", f"Server: {SERVER_NAME}",
                "Content-Type: application/json", f"Content-Length: {len(body)}",
                "Connection: close", "Retry-After: 1",
                *[f"{k}: {v}" for k, v in SECURITY_HEADERS]]
        try:
            request.settimeout(1.0)
            request.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        except OSError:
            pass
        self.shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Server-side only: a connection-level failure is logged, never sent to the client.
        LOG.warning("connection from %s failed", client_address[0] if client_address else "?",
                    exc_info=True)

    # -- graceful stop ---------------------------------------------------------------------
    def drain(self) -> None:
        """After ``shutdown()``: close idle connections, let busy ones finish, then close."""
        self.draining = True
        deadline = time.monotonic() + self.settings.limits.drain_timeout_s
        with self._conn_lock:
            for handler in list(self._connections):
                if not handler.busy:
                    handler.stop_reading()
            while self._connections and time.monotonic() < deadline:
                self._idle.wait(timeout=max(0.01, deadline - time.monotonic()))
                for handler in list(self._connections):
                    if not handler.busy:
                        handler.stop_reading()
            stuck = list(self._connections)
        for handler in stuck:
            handler.abort()
        self.server_close()
        self.request_log.close()


class Handler(BaseHTTPRequestHandler):
    server: ModelHTTPServer
    protocol_version = "HTTP/1.1"
    # Buffered writes: status line, headers and body leave in one send.
    wbufsize = 1 << 16
    error_content_type = "application/json"

    def version_string(self) -> str:
        return SERVER_NAME   # no product version: ZAP 10036 flags version banners

    def setup(self) -> None:
        self.busy = False
        self.linger = False
        self.request_id = "-"
        super().setup()
        try:
            # A silent client is dropped after request_timeout_s (slowloris, idle keep-alive).
            self.connection.settimeout(self.server.settings.limits.request_timeout_s)
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        self.server.track(self)

    def finish(self) -> None:
        try:
            super().finish()
            if self.linger:
                self._linger()
        except OSError:
            pass
        finally:
            self.server.untrack(self)

    def _linger(self) -> None:
        """Read and drop an unread body for a moment before closing: closing a socket with
        unread input sends a reset, which can destroy the 413 the client has not read yet."""
        self.connection.shutdown(socket.SHUT_WR)
        self.connection.settimeout(0.5)
        cap = 4 * self.server.settings.limits.max_body_bytes
        deadline = time.monotonic() + 2.0
        while cap > 0 and time.monotonic() < deadline:
            chunk = self.connection.recv(65536)
            if not chunk:
                break
            cap -= len(chunk)

    def stop_reading(self) -> None:
        """Make an idle keep-alive connection's blocked read return (used while draining)."""
        try:
            self.connection.shutdown(socket.SHUT_RD)
        except OSError:
            pass

    def abort(self) -> None:
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    # -- logging: server side only ---------------------------------------------------------
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        LOG.debug("%s %s", self.address_string(), format % args)

    def log_error(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        LOG.info("%s %s", self.address_string(), format % args)

    # -- responses -------------------------------------------------------------------------
    def parse_request(self) -> bool:
        self.busy = True
        self.request_id = self.server.next_request_id()
        return super().parse_request()

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The stdlib's own errors (bad request line, long header...): JSON, hardened, closed."""
        self.close_connection = True
        if self.request_version == "HTTP/0.9":
            # The stdlib falls back to 0.9 on an unparsable version and would then send the body
            # without a status line or headers; every answer here carries the security headers.
            self.request_version = "HTTP/1.0"
        try:
            text = HTTPStatus(code).phrase   # never the stdlib's message: it quotes the request
        except ValueError:
            text = "error"
        self.respond(code, {"error": text})

    def respond(self, status: int, payload: Any, extra: tuple[tuple[str, str], ...] = ()) -> None:
        body = payload if isinstance(payload, bytes) else _dumps(payload)
        if self.server.draining:
            self.close_connection = True
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for key, value in SECURITY_HEADERS:
            self.send_header(key, value)
        if self.request_id != "-":
            self.send_header("X-Request-ID", self.request_id)
        for key, value in extra:
            self.send_header(key, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD" and status not in (204, 304):
            self.wfile.write(body)
        self.busy = False

    def _dispatch(self) -> None:
        path = self.path.split("?", 1)[0].split("#", 1)[0]
        try:
            methods = ROUTES.get(path)
            if methods is None:
                self.respond(404, {"error": "not found"})
            elif self.command not in methods:
                self.respond(405, {"error": f"method {self.command} not allowed"},
                             (("Allow", ", ".join(methods)),))
            elif path == "/predict":
                self._predict()
            elif path == "/health":
                self.respond(200, {"status": "ok"})
            elif path == "/ready":
                if self.server.draining:
                    self.respond(503, {"status": "draining"})
                else:
                    self.respond(200, {"status": "ready", "model": self.server.model.sha256[:12]})
            else:
                self.respond(200, self.server.openapi)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True
        except Exception:
            LOG.exception("request %s %s %s failed", self.request_id, self.command, path)
            self.close_connection = True
            try:
                self.respond(500, {"error": "internal error", "request_id": self.request_id})
            except OSError:
                pass
        finally:
            self.busy = False

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = _dispatch
    do_OPTIONS = do_TRACE = do_CONNECT = _dispatch

    # -- /predict --------------------------------------------------------------------------
    def _read_body(self) -> bytes:
        limits = self.server.settings.limits
        ctype = (self.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
        if "Transfer-Encoding" in self.headers:
            self.close_connection = True
            raise RequestError(411, "chunked bodies are not accepted; send Content-Length")
        length_text = self.headers.get("Content-Length")
        if length_text is None:
            self.close_connection = True
            raise RequestError(411, "Content-Length required")
        try:
            length = int(length_text)
        except ValueError:
            self.close_connection = True
            raise RequestError(400, "Content-Length is not a number") from None
        if length < 0:
            self.close_connection = True
            raise RequestError(400, "Content-Length is negative")
        if length > limits.max_body_bytes:
            self.close_connection = True   # the body stays unread: the connection cannot be reused
            self.linger = True
            raise RequestError(413, f"body of {length} bytes exceeds the limit of "
                                    f"{limits.max_body_bytes}")
        body = self.rfile.read(length)
        if len(body) != length:
            self.close_connection = True
            raise RequestError(400, "body shorter than Content-Length")
        if ctype != "application/json":
            raise RequestError(415, "Content-Type must be application/json")
        return body

    def _predict(self) -> None:
        server = self.server
        started = time.perf_counter()
        sampled = server.request_log.sample()
        entry: dict[str, Any] = {}
        status = 200
        try:
            if server.draining:
                raise RequestError(503, "shutting down")
            body = self._read_body()
            doc = parse_json(body)
            if server.model.tabular is not None:
                entry = self._predict_rows(doc, sampled)
            else:
                raw = parse_inputs(doc, server.model.signature, server.settings.limits.max_batch)
                x = server.model.prepare(raw)
                check_prepared(x)
                labels, probs = server.model.predict_prepared(x)
                if not np.isfinite(probs).all():
                    raise RequestError(422, "the model produced non-finite scores for this input")
                self.respond(200, {"predictions": labels,
                                   "probabilities": np.round(probs, 6).tolist()})
                if sampled:
                    entry = {"batch": len(labels), "inputs": raw.tolist(), "predictions": labels,
                             "confidence": np.round(probs.max(axis=1), 6).tolist()}
        except RequestError as exc:
            status = exc.status
            extra = (("Retry-After", "1"),) if exc.status == 503 else ()
            self.respond(exc.status, {"error": exc.message}, extra)
            entry = {"error": exc.message}
        finally:
            server.requests_served += 1
        if sampled:
            server.request_log.record({
                "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
                "request_id": self.request_id, "status": status,
                "latency_ms": round((time.perf_counter() - started) * 1000, 3),
                "model": server.model.sha256[:12], **entry})

    def _predict_rows(self, doc: Any, sampled: bool) -> dict[str, Any]:
        """A tabular model: raw rows (named fields or lists; strings, numbers, null) through
        ``ci_ml.model.inference``, the path training and ``ci-ml evaluate`` take."""
        from ci_ml.errors import InputError
        from ci_ml.model.inference import RowError

        server = self.server
        rows = request_rows(doc, server.settings.limits.max_batch)
        assert server.model.tabular is not None
        try:
            pred = server.model.tabular.predict_rows(rows)
        except RowError as exc:
            raise RequestError(422, exc.message) from None
        except InputError as exc:
            # The graph refused or produced non-finite output for these values: logged, and
            # answered without the details.
            LOG.warning("request %s: the model cannot answer: %s", self.request_id, exc.message)
            raise RequestError(422, "the model cannot answer this input") from None
        if pred.values is not None:
            self.respond(200, {"predictions": [float(v) for v in pred.values]})
        else:
            probs = pred.probabilities
            self.respond(200, {"predictions": list(pred.labels),
                               "probabilities": (np.round(probs, 6).tolist()
                                                 if probs is not None else None)})
        if not sampled:
            return {}
        entry: dict[str, Any] = {"batch": len(rows), "inputs": rows, "outputs": pred.outputs()}
        if pred.report is not None and (pred.report.unseen or pred.report.missing
                                        or pred.report.invalid):
            entry["encode"] = pred.report.to_json()
        return entry


class RunningServer:
    """A server on a background thread: for tests, benchmarks and DAST's self-served target."""

    def __init__(self, server: ModelHTTPServer) -> None:
        self.server = server
        self.thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                       name="ci-ml-serve", daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return self.server.url

    def stop(self) -> None:
        self.server.draining = True
        self.server.shutdown()
        self.thread.join()
        self.server.drain()

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def create_server(model: ServedModel, settings: ServeSettings, title: str = "") -> ModelHTTPServer:
    try:
        return ModelHTTPServer(model, settings, title)
    except OSError as exc:
        from ci_ml.errors import UsageError

        raise UsageError(f"cannot listen on {settings.host}:{settings.port}: "
                         f"{exc.strerror or exc}") from exc


def start_background(model: ServedModel, settings: ServeSettings, title: str = "") -> RunningServer:
    return RunningServer(create_server(model, settings, title))


def serve_until_signalled(server: ModelHTTPServer, on_ready: Any = None) -> None:
    """Serve on this (main) thread until SIGTERM or SIGINT, then drain and return."""
    stopping = threading.Event()

    def _stop(signum: int, frame: Any) -> None:
        if not stopping.is_set():
            stopping.set()
            server.draining = True
            LOG.info("signal %d: draining", signum)
            # shutdown() waits for serve_forever to return: never call it on that same thread.
            threading.Thread(target=server.shutdown, daemon=True).start()

    previous = {s: signal.signal(s, _stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        if on_ready is not None:
            on_ready(server)
        server.serve_forever(poll_interval=0.2)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.drain()
