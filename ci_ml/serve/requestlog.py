"""The sampled request and prediction log: one JSON line per sampled /predict request.

Monitoring reads it to compare live inputs and predictions with the training data.
A background thread writes the lines so a slow disk never slows a request; the
file is rotated to ``<path>.1`` once it passes ``max_bytes``.
"""

from __future__ import annotations

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
        fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open for the loop
        try:
            while True:
                item = self._queue.get()
                if item is _STOP:
                    break
                try:
                    fh.write(json.dumps(item, separators=(",", ":")) + "\n")
                    self.written += 1
                    if self._queue.empty():
                        fh.flush()
                    if fh.tell() >= self.max_bytes:
                        fh.close()
                        os.replace(self.path, self.path.with_name(self.path.name + ".1"))
                        fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
                except (OSError, TypeError, ValueError) as exc:
                    LOG.warning("request log: cannot write %s: %s", self.path, exc)
        finally:
            fh.close()
