"""The sampled request and prediction log: one JSON line per sampled prediction request.

Monitoring reads it to compare live inputs and predictions with the training data
(format: docs/serve.md). A background thread writes the lines so a slow disk never
slows a request. Several worker processes append to the same file: each write holds
an exclusive ``flock`` on it, appends whole lines (``O_APPEND``), and the file is rotated
to ``<path>.1`` under the same lock once it passes ``max_bytes``; a writer that finds the
path pointing at a new file (another worker rotated it) reopens before writing.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import queue
import threading
from pathlib import Path
from typing import Any

LOG = logging.getLogger("ci_ml.serve")
_STOP = object()


class Sampler:
    """Deterministic sampling: exactly ``rate`` of calls say yes, spread evenly."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._acc = 0.0
        self._lock = threading.Lock()

    def __call__(self) -> bool:
        if self.rate <= 0:
            return False
        with self._lock:
            self._acc += self.rate
            if self._acc >= 1.0 - 1e-9:
                self._acc -= 1.0
                return True
            return False


class _Appender:
    """One process's handle on the shared log file."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.fd = self._open()

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)

    def write(self, data: bytes) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        try:
            mine = os.fstat(self.fd)
            try:
                current = os.stat(self.path)
                moved = (current.st_ino, current.st_dev) != (mine.st_ino, mine.st_dev)
            except FileNotFoundError:
                moved = True
            if moved:       # rotated by another worker: write to the new file
                fcntl.flock(self.fd, fcntl.LOCK_UN)
                os.close(self.fd)
                self.fd = self._open()
                fcntl.flock(self.fd, fcntl.LOCK_EX)
            os.write(self.fd, data)
            if os.fstat(self.fd).st_size >= self.max_bytes:
                os.replace(self.path, self.path.with_name(self.path.name + ".1"))
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)

    def close(self) -> None:
        os.close(self.fd)


class RequestLog:
    def __init__(self, path: Path | None, sample_rate: float, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.sample = Sampler(sample_rate if path is not None else 0.0)
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.written = 0
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._thread = threading.Thread(target=self._write_loop, name="ci-ml-request-log",
                                            daemon=True)
            self._thread.start()

    @property
    def enabled(self) -> bool:
        return self._thread is not None

    def record(self, entry: dict[str, Any]) -> None:
        if self._thread is not None:
            self._queue.put(entry)

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued, then stop the writer."""
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(timeout)
            self._thread = None

    def _write_loop(self) -> None:
        assert self.path is not None
        try:
            out = _Appender(self.path, self.max_bytes)
        except OSError as exc:
            LOG.warning("request log: cannot open %s: %s", self.path, exc)
            return
        try:
            stop = False
            while not stop:
                lines = []
                item = self._queue.get()
                # Everything already queued goes out in one locked append.
                while True:
                    if item is _STOP:
                        stop = True
                        break
                    try:
                        lines.append(json.dumps(item, separators=(",", ":"),
                                                allow_nan=False) + "\n")
                    except (TypeError, ValueError) as exc:
                        LOG.warning("request log: cannot encode an entry: %s", exc)
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                if lines:
                    try:
                        out.write("".join(lines).encode("utf-8"))
                        self.written += len(lines)
                    except OSError as exc:
                        LOG.warning("request log: cannot write %s: %s", self.path, exc)
        finally:
            out.close()
