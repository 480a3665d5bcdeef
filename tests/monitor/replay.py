"""Replayed traffic: rows of a real data split become request-log lines in the server's format.

Predictions come from the real model (ONNX Runtime, in process); each seed draws a
different window from the split. Faults are applied to the rows, the labels or the
latencies before the lines are written, so a test states exactly what it broke.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from ci_ml.serve.model import ServedModel


@dataclass(frozen=True)
class Split:
    features: tuple[str, ...]
    x: np.ndarray            # raw feature values
    labels: tuple[str, ...]


def read_split(path: Path, target: str) -> Split:
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    header, body = rows[0], rows[1:]
    t = header.index(target)
    features = tuple(h for i, h in enumerate(header) if i != t)
    x = np.asarray([[float(v) for i, v in enumerate(r) if i != t] for r in body])
    return Split(features, x, tuple(r[t] for r in body))


def predict(model: ServedModel, rows: np.ndarray) -> list[str]:
    """The model's labels for raw rows, decoded and answered as the server does."""
    labels: list[str] = []
    for start in range(0, len(rows), 256):
        batch = model.decoder.decode_rows([[float(v) for v in r] for r in rows[start:start + 256]])
        result = model.predict(batch)
        assert result.labels is not None
        labels.extend(result.labels)
    return labels


@dataclass
class Traffic:
    """One window of requests (batch 1 each): rows, true labels, predictions, latencies."""

    rows: np.ndarray
    truth: list[str]
    predicted: list[str]
    latency_ms: np.ndarray
    ids: list[str]


def draw(split: Split, model: ServedModel, seed: int, size: int,
         weights: Callable[[str], float] | None = None, replace: bool = False) -> Traffic:
    """``size`` rows of the split at random: distinct ones, or with ``replace`` a resample
    (optionally weighted by class, which needs more rows than the split holds per class)."""
    rng = np.random.default_rng(seed)
    p = None
    if weights is not None:
        w = np.asarray([weights(label) for label in split.labels], dtype=float)
        p = w / w.sum()
    index = rng.choice(len(split.labels), size=size, replace=replace, p=p)
    rows = split.x[index].copy()
    predicted = predict(model, rows)
    # Latencies like the server's: around a millisecond, with a tail.
    latency = rng.lognormal(mean=0.0, sigma=0.5, size=size)
    return Traffic(rows, [split.labels[i] for i in index], list(predicted), latency,
                   [f"s{seed}-{i:05d}" for i in range(size)])


def repredict(traffic: Traffic, model: ServedModel) -> None:
    """After a fault changed the rows, the model's answers change with them."""
    traffic.predicted = predict(model, traffic.rows)


def log_lines(traffic: Traffic, digest: str, *, end: datetime | None = None,
              version: str | None = None, span: timedelta = timedelta(minutes=30)
              ) -> list[str]:
    end = end or datetime.now(UTC)
    n = len(traffic.ids)
    lines = []
    for i in range(n):
        ts = end - span + span * (i + 1) / (n + 1)
        lines.append(json.dumps({
            "id": traffic.ids[i], "ts": ts.isoformat().replace("+00:00", "Z"),
            "model_digest": digest, "model_version": version, "route": "/predict",
            "status": 200, "latency_ms": round(float(traffic.latency_ms[i]), 3),
            "inputs": [[float(v) for v in traffic.rows[i]]],
            "outputs": [{"label": traffic.predicted[i]}]}))
    return lines


def write_log(path: Path, lines: Sequence[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def write_labels(path: Path, ids: Sequence[str], labels: Sequence[Any]) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "row", "label"])
        for rid, label in zip(ids, labels, strict=True):
            w.writerow([rid, 0, label])
    return path


def drop_accuracy(traffic: Traffic, points: float, classes: Sequence[str], seed: int
                  ) -> list[str]:
    """True labels, except that ``points`` percent of the rows the model got right get
    another class: the model's accuracy on these labels falls by that many points."""
    rng = np.random.default_rng(seed + 1000)
    labels = list(traffic.truth)
    right = [i for i, (t, p) in enumerate(zip(labels, traffic.predicted, strict=True)) if t == p]
    k = round(points / 100 * len(labels))
    for i in rng.choice(right, size=k, replace=False):
        labels[i] = next(c for c in classes if c != traffic.predicted[i])
    return labels
