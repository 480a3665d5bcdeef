"""The model server's ASGI application: routing, answers, metrics, the request log.

No web framework: a handful of routes, dispatched on the exact path, so there is no
routing surprise to test for. Hardening that lives here:
- every answer (errors included) is JSON with the security headers, ``Server: ci-ml``
  (no version) and an ``X-Request-Id``; a request never gets a traceback back;
- bodies are capped before they are read (``Content-Length``) or while they arrive
  (chunked); batches are capped; every value is checked by the model's decoder;
- while draining (SIGTERM), readiness answers 503 and prediction requests are refused.
Framing, header limits, timeouts and connection caps live in ``ci_ml.serve.protocol``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import numpy as np

from ci_ml.serve import oip
from ci_ml.serve.decoders.interface import Batch, Predictions, RequestError
from ci_ml.serve.jsonio import dumps
from ci_ml.serve.labels import LabelSink
from ci_ml.serve.metrics import CONTENT_TYPE as METRICS_TYPE
from ci_ml.serve.metrics import Metrics
from ci_ml.serve.model import ServedModel
from ci_ml.serve.openapi import build_openapi
from ci_ml.serve.requestlog import RequestLog
from ci_ml.serve.settings import ServeSettings
from ci_ml.serve.validation import parse_json, parse_rows

LOG = logging.getLogger("ci_ml.serve")
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

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
BASE_HEADERS: list[tuple[bytes, bytes]] = [(b"server", SERVER_NAME.encode())] + [
    (k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS]
JSON_TYPE = b"application/json"
# Route templates (the metric label) -> allowed methods.
ROUTES: dict[str, tuple[str, ...]] = {
    "/predict": ("POST",), "/health": ("GET", "HEAD"), "/ready": ("GET", "HEAD"),
    "/openapi.json": ("GET", "HEAD"), "/metrics": ("GET", "HEAD"),
    "/v2": ("GET", "HEAD"), "/v2/health/live": ("GET", "HEAD"),
    "/v2/health/ready": ("GET", "HEAD"), "/v2/models/{name}": ("GET", "HEAD"),
    "/v2/models/{name}/ready": ("GET", "HEAD"), "/v2/models/{name}/infer": ("POST",),
    "/labels": ("POST",),
}
_MODEL_PATH = re.compile(r"^/v2/models/([^/]+)(?:/versions/([^/]+))?(/ready|/infer)?$")
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE",
                     "CONNECT"})
PREDICT_ROUTES = ("/predict", "/v2/models/{name}/infer")


class Response:
    __slots__ = ("status", "body", "headers", "close")

    def __init__(self, status: int, body: Any, headers: tuple[tuple[str, str], ...] = (),
                 content_type: bytes = JSON_TYPE, close: bool = False) -> None:
        self.status = status
        self.body = body if isinstance(body, bytes) else dumps(body)
        self.headers = [(b"content-type", content_type)] + [
            (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]
        self.close = close


def error(status: int, message: str, **extra: Any) -> Response:
    headers = (("Retry-After", "1"),) if status == 503 else ()
    return Response(status, {"error": message, **extra}, headers)


class ModelApp:
    """One served model. ``await app(scope, receive, send)`` is the ASGI entry point."""

    def __init__(self, model: ServedModel, settings: ServeSettings, title: str = "") -> None:
        self.model = model
        self.settings = settings
        self.limits = settings.limits
        self.version = settings.version if settings.version is not None else model.card.version
        self.name = settings.name or model.name
        self.draining = False
        self.requests_served = 0
        self.request_log = RequestLog(settings.log.path, settings.log.sample_rate,
                                      settings.log.max_bytes)
        self.metrics = Metrics(model=self.name, version=self.version, digest=model.sha256,
                               task=model.card.task, classes=model.card.classes)
        self.openapi = dumps(build_openapi(model, settings, self.name,
                                           title or f"ci-ml model server ({model.path.name})"))
        self._pool = ThreadPoolExecutor(max_workers=max(2, settings.limits.max_connections // 8),
                                        thread_name_prefix="ci-ml-infer")
        # Inline inference only while its estimated time stays under this (see _run).
        self.inline_budget_s = 0.0005
        self._row_cost_s = self._calibrate()
        self._ids = itertools.count(1)
        self._id_prefix = os.urandom(4).hex()
        self.labels = LabelSink(settings.labels, settings.limits.max_batch)

    def next_request_id(self) -> str:
        return f"{self._id_prefix}-{next(self._ids):06d}"

    # -- ASGI ------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def close(self) -> None:
        """Flush the request log and drop this worker's live gauges."""
        self.draining = True
        self._pool.shutdown(wait=True)
        self.request_log.close()
        self.labels.close()
        self.metrics.close()

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        rid = self.next_request_id()
        method = scope["method"]
        path = scope["path"]
        route, params = self._route(path)
        metrics = self.metrics
        metrics.in_flight.inc()
        response: Response
        try:
            response = await self._dispatch(route, params, method, scope, receive, rid, started)
        except ConnectionResetError:
            metrics.in_flight.dec()
            return          # the client went away, or its body did not arrive in time
        except Exception:
            LOG.exception("request %s %s %s failed", rid, method, route)
            response = error(500, "internal error", request_id=rid)
            response.close = True
        metrics.in_flight.dec()
        headers = BASE_HEADERS + response.headers + [
            (b"content-length", str(len(response.body)).encode()),
            (b"x-request-id", rid.encode())]
        if response.close or self.draining:
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": response.status,
                    "headers": headers})
        body = b"" if method == "HEAD" else response.body
        await send({"type": "http.response.body", "body": body})
        metrics.observe_request(route, method if method in METHODS else "other",
                                response.status, time.perf_counter() - started)

    def _route(self, path: str) -> tuple[str, dict[str, str]]:
        if path in ROUTES:
            return path, {}
        match = _MODEL_PATH.match(path)
        if match:
            name, version, tail = match.groups()
            params = {"name": name, "version": version or ""}
            return "/v2/models/{name}" + (tail or ""), params
        return "other", {}

    async def _dispatch(self, route: str, params: dict[str, str], method: str, scope: Scope,
                        receive: Receive, rid: str, started: float) -> Response:
        methods = ROUTES.get(route)
        if methods is None:
            return error(404, "not found")
        if method not in methods:
            return Response(405, {"error": f"method {method} not allowed" if method in METHODS
                                  else "method not allowed"},
                            (("Allow", ", ".join(methods)),))
        if params:
            if params["name"] != self.name or params["version"] not in ("", self.version or ""):
                return error(404, f"unknown model or version; this server serves '{self.name}'"
                                  + (f" version '{self.version}'" if self.version else ""))
        if route == "/predict":
            return await self._predict(scope, receive, rid, started)
        if route == "/v2/models/{name}/infer":
            return await self._infer(scope, receive, rid, started)
        if route == "/labels":
            return await self._labels(scope, receive)
        return self._get(route)

    async def _labels(self, scope: Scope, receive: Receive) -> Response:
        """Late labels (ci_ml.serve.labels): off without serve.labels.path, bearer token."""
        if not self.labels.enabled:
            return error(404, "not found")
        if not self.labels.authorized(dict(scope["headers"]).get(b"authorization")):
            return Response(401, {"error": "a valid bearer token is required"},
                            (("WWW-Authenticate", 'Bearer realm="labels"'),))
        try:
            body = await self._read_body(scope, receive, ("application/json",))
            written = self.labels.accept(parse_json(body))
        except _TooLarge as exc:
            response = error(413, str(exc))
            response.close = True
            return response
        except RequestError as exc:
            return error(exc.status, exc.message)
        return Response(200, {"accepted": written})

    def _get(self, route: str) -> Response:
        ready = not self.draining
        if route in ("/health", "/v2/health/live"):
            return Response(200, {"status": "ok"} if route == "/health" else {"live": True})
        if route == "/ready":
            return (Response(200, {"status": "ready", "model": self.model.sha256[:12]}) if ready
                    else error(503, "draining"))
        if route in ("/v2/health/ready", "/v2/models/{name}/ready"):
            return Response(200, {"ready": True}) if ready else error(503, "draining")
        if route == "/openapi.json":
            return Response(200, self.openapi)
        if route == "/metrics":
            return Response(200, self.metrics.exposition(), content_type=METRICS_TYPE.encode())
        if route == "/v2":
            return Response(200, oip.server_metadata())
        return Response(200, oip.model_metadata(self.model, self.version))

    # -- bodies ----------------------------------------------------------------------------
    async def _read_body(self, scope: Scope, receive: Receive, types: tuple[str, ...]) -> bytes:
        limit = self.limits.max_body_bytes
        headers = dict(scope["headers"])
        length_text = headers.get(b"content-length")
        chunked = b"transfer-encoding" in headers
        if length_text is None and not chunked:
            raise RequestError(411, "Content-Length required")
        if length_text is not None and not length_text.isdigit():
            raise RequestError(400, "Content-Length is not a number")
        if length_text is not None and int(length_text) > limit:
            # Unread: the protocol layer discards it (framing stays right) or closes.
            raise RequestError(413, f"body of {int(length_text)} bytes exceeds the limit of "
                                    f"{limit}")
        ctype = headers.get(b"content-type", b"").split(b";", 1)[0].strip().lower()
        if ctype.decode("latin-1") not in types:
            raise RequestError(415, "Content-Type must be " + " or ".join(t for t in types if t))
        parts, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ConnectionResetError("client went away")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise _TooLarge(f"body exceeds the limit of {limit} bytes")
            parts.append(chunk)
            if not message.get("more_body"):
                return b"".join(parts)

    # -- predictions -----------------------------------------------------------------------
    async def _predict(self, scope: Scope, receive: Receive, rid: str,
                       started: float) -> Response:
        def decode(body: bytes) -> Batch:
            rows = parse_rows(parse_json(body), self.limits.max_batch)
            return self.model.decoder.decode_rows(rows)

        def answer(batch: Batch, result: Predictions) -> tuple[Any, bytes, tuple[()]]:
            if result.labels is not None:
                assert result.probabilities is not None
                doc = {"id": rid, "predictions": result.labels,
                       "probabilities": np.round(result.probabilities, 6).tolist()}
            else:
                assert result.values is not None
                doc = {"id": rid, "predictions": result.values.tolist()}
            return doc, b"", ()

        return await self._serve_prediction("/predict", scope, receive, rid, started,
                                            ("application/json",), decode, answer)

    async def _infer(self, scope: Scope, receive: Receive, rid: str, started: float
                     ) -> Response:
        header_length = dict(scope["headers"]).get(oip.HEADER_LENGTH.encode())
        request: list[oip.InferRequest] = []

        def decode(body: bytes) -> Batch:
            req = oip.parse_infer(body, header_length.decode("latin-1") if header_length
                                  else None, self.model.decoder.protocol_inputs(),
                                  self.limits.max_batch)
            request.append(req)
            return self.model.decoder.decode_tensors(req.tensors)

        def answer(batch: Batch, result: Predictions) -> tuple[Any, bytes, tuple[tuple[str, str],
                                                                             ...]]:
            doc, tail = oip.build_response(self.model, self.version, request[0], result)
            doc.setdefault("id", rid)
            doc.setdefault("parameters", {})["request_id"] = rid
            return doc, tail, ()

        return await self._serve_prediction("/v2/models/{name}/infer", scope, receive, rid,
                                            started, ("", "application/json",
                                                      "application/octet-stream"),
                                            decode, answer)

    async def _serve_prediction(self, route: str, scope: Scope, receive: Receive, rid: str,
                                started: float, types: tuple[str, ...],
                                decode: Callable[[bytes], Batch],
                                answer: Callable[[Batch, Predictions], tuple[Any, bytes, Any]]
                                ) -> Response:
        sampled = self.request_log.sample()
        batch: Batch | None = None
        result: Predictions | None = None
        self.requests_served += 1
        try:
            if self.draining:
                raise RequestError(503, "shutting down")
            body = await self._read_body(scope, receive, types)
            batch = decode(body)
            self.metrics.observe_batch(route, batch.size)
            result = await self._run(batch)
            doc, tail, headers = answer(batch, result)
            response = self._prediction_response(doc, tail, headers)
            self._count(result)
        except _TooLarge as exc:
            response = error(413, str(exc))
            response.close = True     # the rest of the body is unread: the framing is lost
        except RequestError as exc:
            response = error(exc.status, exc.message)
            if exc.status == 413 and self._unread_too_big(scope):
                response.close = True
        if sampled:
            self._log(rid, route, response.status, started, batch, result)
        return response

    async def _run(self, batch: Batch) -> Predictions:
        """Inference. A batch the model scores in well under a millisecond runs right here:
        handing it to a thread and back costs more than it blocks the event loop. Anything
        longer runs on a worker thread (ONNX Runtime releases the GIL), so the loop keeps
        answering health checks, metrics and other connections meanwhile."""
        if batch.size * self._row_cost_s <= self.inline_budget_s:
            return self.model.predict(batch)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self.model.predict, batch)

    def _calibrate(self) -> float:
        """Seconds one row of the example takes to score (median of a few runs), or
        infinity when the example does not decode (then every batch goes to the pool)."""
        try:
            batch = self.model.decoder.decode_rows([self.model.decoder.example_row()])
            self.model.predict(batch)
            times = []
            for _ in range(7):
                started = time.perf_counter()
                self.model.predict(batch)
                times.append(time.perf_counter() - started)
            return sorted(times)[3]
        except Exception:  # noqa: BLE001 - a model that cannot score its example: be safe
            return float("inf")

    def _prediction_response(self, doc: Any, tail: bytes, headers: Any) -> Response:
        head = dumps(doc)
        if not tail:
            return Response(200, head, headers)
        return Response(200, head + tail,
                        ((oip.HEADER_LENGTH.title(), str(len(head))), *headers),
                        content_type=b"application/octet-stream")

    def _unread_too_big(self, scope: Scope) -> bool:
        """A declared body far past the limit is not worth reading to keep the connection."""
        length = dict(scope["headers"]).get(b"content-length")
        return length is None or int(length) > 8 * self.limits.max_body_bytes

    def _count(self, result: Predictions) -> None:
        if result.labels is not None:
            self.metrics.observe_labels(result.labels)
        elif result.values is not None:
            self.metrics.observe_values(result.values.reshape(-1).tolist())

    def _log(self, rid: str, route: str, status: int, started: float, batch: Batch | None,
             result: Predictions | None) -> None:
        self.request_log.record({
            "id": rid, "ts": datetime.now(UTC).isoformat(timespec="milliseconds").replace(
                "+00:00", "Z"),
            "model_digest": self.model.sha256, "model_version": self.version,
            "route": route, "status": status,
            "latency_ms": round((time.perf_counter() - started) * 1000, 3),
            "inputs": batch.rows if batch is not None else None,
            "outputs": result.rows() if result is not None else None})


class _TooLarge(Exception):
    pass
