"""A raw HTTP client for the built-in engine: sends exactly what a probe says, never raises.

Every outcome is an ``Exchange``: a response, or the way it failed (refused, reset,
timeout). Paths go out verbatim (``/../etc/passwd`` is not normalized) and each
request uses its own connection, so one probe cannot poison the next.
"""

from __future__ import annotations

import http.client
import ssl
import time
from dataclasses import dataclass, field, replace
from urllib.parse import urlsplit

from ci_ml.dast.interface import DastError

MAX_BODY_KEPT = 256 * 1024


@dataclass(frozen=True)
class Exchange:
    method: str
    url: str
    path: str
    status: int | None = None
    reason: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    error: str | None = None          # refused, reset, timeout, closed
    elapsed_s: float = 0.0
    sent_bytes: int = 0
    request_headers: tuple[tuple[str, str], ...] = field(default_factory=tuple)

    @property
    def answered(self) -> bool:
        return self.status is not None

    def header(self, name: str) -> str | None:
        lname = name.lower()
        return next((v for k, v in self.headers if k.lower() == lname), None)

    def header_values(self, name: str) -> list[str]:
        lname = name.lower()
        return [v for k, v in self.headers if k.lower() == lname]

    @property
    def content_type(self) -> str:
        return (self.header("Content-Type") or "").split(";", 1)[0].strip().lower()

    @property
    def is_html(self) -> bool:
        if self.content_type in ("text/html", "application/xhtml+xml"):
            return True
        if not self.content_type:
            head = self.body[:512].lstrip().lower()
            return head.startswith((b"<!doctype html", b"<html"))
        return False

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    @property
    def status_line(self) -> str:
        return f"HTTP/1.1 {self.status} {self.reason}".strip() if self.answered else ""


class Client:
    def __init__(self, base_url: str, timeout_s: float) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise DastError(f"target {base_url!r} is not an http(s) URL")
        self.base_url = base_url.rstrip("/")
        self.https = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.https else 80)
        self.prefix = parts.path.rstrip("/")
        self.timeout_s = timeout_s
        self.count = 0

    def url(self, path: str) -> str:
        return self.base_url + path

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        if self.https:
            return http.client.HTTPSConnection(self.host, self.port, timeout=timeout,
                                               context=ssl.create_default_context())
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def send(self, method: str, path: str, body: bytes | None = None,
             headers: dict[str, str] | None = None, timeout: float | None = None) -> Exchange:
        full_path = self.prefix + path
        hdrs = {"User-Agent": "ci-ml-dast", "Accept": "application/json", **(headers or {})}
        if body is not None and "Content-Length" not in hdrs:
            hdrs["Content-Length"] = str(len(body))
        conn = self._connection(timeout or self.timeout_s)
        started = time.perf_counter()
        self.count += 1
        sent = Exchange(method=method, url=self.url(path), path=path,
                        sent_bytes=len(body or b""), request_headers=tuple(hdrs.items()))

        def failed(error: str) -> Exchange:
            return replace(sent, error=error, elapsed_s=time.perf_counter() - started)

        try:
            conn.putrequest(method, full_path, skip_host=False, skip_accept_encoding=True)
            for key, value in hdrs.items():
                conn.putheader(key, value)
            send_error = None
            try:
                conn.endheaders(body)
            except (BrokenPipeError, ConnectionResetError) as exc:
                # The server may answer (413) and close before reading the whole body.
                send_error = exc
                if conn.sock is None:
                    # Reset while connecting (a target shedding load): no socket to read
                    # an answer from; http.client would fail on None.
                    return failed("reset")
            try:
                resp = conn.getresponse()
                data = resp.read(MAX_BODY_KEPT)
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                return failed("reset" if send_error is None else "closed")
            return replace(sent, status=resp.status, reason=resp.reason or "",
                           headers=tuple(resp.getheaders()), body=data,
                           elapsed_s=time.perf_counter() - started)
        except ConnectionRefusedError:
            return failed("refused")
        except TimeoutError:
            return failed("timeout")
        except (http.client.HTTPException, OSError) as exc:
            return failed(f"failed: {type(exc).__name__}")
        finally:
            conn.close()

    def alive(self, path: str = "/") -> bool:
        """Whether the target still answers at all (any status counts)."""
        for _ in range(3):
            ex = self.send("GET", path, timeout=min(self.timeout_s, 3.0))
            if ex.answered:
                return True
            if ex.error == "refused":
                return False
            time.sleep(0.2)
        return False
