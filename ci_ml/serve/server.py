"""Running the server: uvicorn (httptools parser, uvloop when installed), one or more workers.

- one worker: the app is built here and served in this process (``ci-ml serve
  --workers 1``, the tests, DAST's self-served target, on a background thread);
- several: uvicorn's supervisor binds the socket and starts worker processes, each of
  which loads the model itself (``ci_ml.serve.server:worker_app``, settings passed in the
  environment) and shares the Prometheus metrics through files in a private directory.

SIGTERM (or SIGINT) drains: readiness turns 503, the listening socket closes, idle
keep-alive connections close, requests in flight finish (up to ``drain_timeout_s``),
then the request log is flushed and the process exits 0.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import uvicorn

from ci_ml.errors import UsageError
from ci_ml.serve.app import ModelApp
from ci_ml.serve.decoders import DecoderLimits
from ci_ml.serve.metrics import MULTIPROC_ENV
from ci_ml.serve.model import ServedModel
from ci_ml.serve.protocol import HardenedProtocol
from ci_ml.serve.settings import ServeSettings

LOG = logging.getLogger("ci_ml.serve")
WORKER_ENV = "CI_ML_SERVE_WORKER"


def load_model(path: Path, settings: ServeSettings) -> ServedModel:
    limits = DecoderLimits(max_abs_input=settings.limits.max_abs_input,
                           max_string=settings.limits.max_string)
    return ServedModel(path, threads=settings.threads, limits=limits)


class ServeConfig(uvicorn.Config):
    """uvicorn's config plus our limits, which the protocol reads (picklable: workers)."""

    def __init__(self, app: Any, settings: ServeSettings, **kwargs: Any) -> None:
        self.ci_ml_limits = settings.limits
        loop = "uvloop" if _has("uvloop") else "asyncio"
        super().__init__(
            app, host=settings.host, port=settings.port, http=HardenedProtocol, ws="none",
            loop=loop, lifespan="on", log_config=None, access_log=False, server_header=False,
            proxy_headers=False, timeout_keep_alive=max(1, int(settings.limits.request_timeout_s)),
            timeout_graceful_shutdown=max(1, int(settings.limits.drain_timeout_s + 0.999)),
            backlog=128, **kwargs)


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


class ModelServer(uvicorn.Server):
    """uvicorn's server; the first exit signal also turns readiness off (draining)."""

    def handle_exit(self, sig: int, frame: Any) -> None:
        app = self.config.loaded_app
        while app is not None and not isinstance(app, ModelApp):
            app = getattr(app, "app", None)
        if isinstance(app, ModelApp) and not app.draining:
            app.draining = True
            LOG.info("signal %d: draining", sig)
        # As uvicorn's, minus re-raising the signal after the drain: a drained server exits 0.
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        else:
            self.should_exit = True


def bind(settings: ServeSettings) -> socket.socket:
    """The listening socket, bound now so a port in use is a usage error before anything."""
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((settings.host, settings.port))
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {settings.host}:{settings.port}: "
                         f"{exc.strerror or exc}") from exc
    # Listening from now on: connections wait in the backlog while the workers start.
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    shown = host if ":" not in host else f"[{host}]"
    return f"http://{shown}:{port}"


class RunningServer:
    """A one-worker server on a background thread: tests, benchmarks, DAST's own target."""

    def __init__(self, app: ModelApp, settings: ServeSettings) -> None:
        self.app = app
        self.sock = bind(settings)
        self.url = url_of(self.sock)
        self.server = ModelServer(ServeConfig(app, settings))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       name="ci-ml-serve", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started and self.thread.is_alive():
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not start within 30 s")
            time.sleep(0.01)

    @property
    def requests_served(self) -> int:
        return self.app.requests_served

    def stop(self) -> None:
        self.app.draining = True
        self.server.should_exit = True
        self.thread.join(timeout=self.app.limits.drain_timeout_s + 10)
        self.sock.close()

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_background(model: ServedModel, settings: ServeSettings, title: str = ""
                     ) -> RunningServer:
    return RunningServer(ModelApp(model, settings, title), settings)


def worker_app() -> ModelApp:
    """uvicorn's app factory in each worker process: settings from the supervisor."""
    doc = json.loads(os.environ[WORKER_ENV])
    settings = ServeSettings.from_section(doc["settings"])
    app = ModelApp(load_model(Path(doc["model"]), settings), settings)
    # uvicorn's workers run its plain Server: wrap the exit handler it installed so the
    # first SIGTERM also turns readiness off while in-flight requests drain.
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous = signal.getsignal(sig)
            if callable(previous):
                signal.signal(sig, _draining(app, previous))
    return app


def _draining(app: ModelApp, previous: Callable[[int, Any], Any]) -> Callable[[int, Any], None]:
    def handler(sig: int, frame: Any) -> None:
        app.draining = True
        previous(sig, frame)

    return handler


def serve_forever(model_path: Path, settings: ServeSettings,
                  on_ready: Callable[[str, int], None] | None = None) -> int:
    """Serve in the foreground until SIGTERM/SIGINT, then drain; returns requests served
    (one worker) or -1 (several: each worker counts its own)."""
    workers = settings.worker_count
    model = load_model(model_path, settings)   # fails here, once, on a bad model
    sock = bind(settings)
    try:
        if workers == 1:
            app = ModelApp(model, settings)
            server = ModelServer(ServeConfig(app, settings))
            if on_ready is not None:
                on_ready(url_of(sock), 1)
            server.run(sockets=[sock])
            return app.requests_served
        try:
            metrics_dir = tempfile.mkdtemp(prefix="ci-ml-metrics-",
                                           dir=os.environ.get(MULTIPROC_ENV) or None)
        except OSError as exc:
            # Workers share metrics through files; with nowhere to write them, one worker.
            LOG.warning("no writable directory for shared metrics (%s): serving with one "
                        "worker", exc)
            return serve_forever(model_path, replace(settings, workers=1), on_ready)
        return _serve_workers(model_path, settings, sock, workers, on_ready, metrics_dir)
    finally:
        sock.close()


def _serve_workers(model_path: Path, settings: ServeSettings, sock: socket.socket, workers: int,
                   on_ready: Callable[[str, int], None] | None, metrics_dir: str) -> int:
    from uvicorn.supervisors import Multiprocess

    previous = os.environ.get(MULTIPROC_ENV)
    os.environ[MULTIPROC_ENV] = metrics_dir
    os.environ[WORKER_ENV] = json.dumps({"model": str(model_path.resolve()),
                                         "settings": replace(settings, workers=1).to_json()})
    try:
        config = ServeConfig("ci_ml.serve.server:worker_app", settings, factory=True,
                             workers=workers)
        if on_ready is not None:
            on_ready(url_of(sock), workers)
        Multiprocess(config, sockets=[sock]).run()
        return -1
    finally:
        os.environ.pop(WORKER_ENV, None)
        if previous is None:
            os.environ.pop(MULTIPROC_ENV, None)
        else:
            os.environ[MULTIPROC_ENV] = previous
        shutil.rmtree(metrics_dir, ignore_errors=True)
