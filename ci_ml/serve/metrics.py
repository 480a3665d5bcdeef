"""The server's Prometheus metrics (names fixed by the monitoring contract, docs/serve.md).

One process: the metrics live in a private registry per server (tests run several servers
in one process). Several workers: ``PROMETHEUS_MULTIPROC_DIR`` is set by the supervisor
before the workers start, prometheus_client keeps every value in a per-process file there,
and ``/metrics`` sums the files of all workers, so any worker answers for the whole server.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# The *_created series double the exposition for no use here.
disable_created_metrics()
LATENCY_BUCKETS = (0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                   1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
VALUE_BUCKETS = (-1e6, -1e4, -1e3, -100, -10, -1, -0.1, 0, 0.1, 1, 10, 100, 1e3, 1e4, 1e6)
CONTENT_TYPE = CONTENT_TYPE_LATEST


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


class Metrics:
    """The six metric families; ``observe_*`` are called once per request."""

    def __init__(self, *, model: str, version: str | None, digest: str, task: str,
                 classes: Sequence[str] = (), value_buckets: Sequence[float] = VALUE_BUCKETS
                 ) -> None:
        self.shared = multiprocess_dir() is not None
        # In multiprocess mode values go to files whatever the registry; none is needed.
        self.registry = None if self.shared else CollectorRegistry(auto_describe=True)
        reg = self.registry
        self.requests = Counter("ci_ml_requests", "HTTP requests answered, by route, method "
                                "and status", ("route", "method", "status"), registry=reg)
        self.duration = Histogram("ci_ml_request_duration_seconds", "Time from the request's "
                                  "headers to the end of the answer", ("route",),
                                  buckets=LATENCY_BUCKETS, registry=reg)
        self.in_flight = Gauge("ci_ml_requests_in_flight", "Requests being answered now",
                               registry=reg, multiprocess_mode="livesum")
        self.batch = Histogram("ci_ml_batch_size", "Rows per prediction request", ("route",),
                               buckets=BATCH_BUCKETS, registry=reg)
        self.task = task
        if task == "classification":
            self.classes = Counter("ci_ml_predictions", "Predicted rows, by class", ("class",),
                                   registry=reg)
            # Every class appears from the start: rate() of a class never seen is 0, not absent.
            self._class_children = {c: self.classes.labels(c) for c in classes}
        else:
            self.values = Histogram("ci_ml_prediction_value", "Predicted values",
                                    buckets=tuple(value_buckets), registry=reg)
        info = Gauge("ci_ml_model_info", "The served model (always 1)",
                     ("model", "version", "digest"), registry=reg, multiprocess_mode="max")
        info.labels(model, version or "", digest).set(1)
        self._request_children: dict[tuple[str, str, int], Counter] = {}
        self._duration_children: dict[str, Histogram] = {}
        self._batch_children: dict[str, Histogram] = {}

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        child = self._request_children.get(key)
        if child is None:
            child = self._request_children[key] = self.requests.labels(route, method, str(status))
        child.inc()
        hist = self._duration_children.get(route)
        if hist is None:
            hist = self._duration_children[route] = self.duration.labels(route)
        hist.observe(seconds)

    def observe_batch(self, route: str, size: int) -> None:
        hist = self._batch_children.get(route)
        if hist is None:
            hist = self._batch_children[route] = self.batch.labels(route)
        hist.observe(size)

    def observe_labels(self, labels: Sequence[str]) -> None:
        for label in labels:
            child = self._class_children.get(label)
            if child is None:
                child = self._class_children[label] = self.classes.labels(label)
            child.inc()

    def observe_values(self, values: Sequence[float]) -> None:
        for v in values:
            self.values.observe(v)

    def exposition(self) -> bytes:
        if self.registry is not None:
            return bytes(generate_latest(self.registry))
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return bytes(generate_latest(registry))

    def close(self) -> None:
        """A worker that stops takes its live gauges (in-flight requests) with it."""
        if self.shared:
            multiprocess.mark_process_dead(os.getpid())
