"""The training reference: what "normal" traffic looks like for the monitored model.

Two sources behind ``ReferenceSource``:

- ``StoredReference`` reads a reference file: ci-ml's own form (``to_json``), or
  the training profile the data step stores beside the model card, through
  ``ci_ml.monitor.profile`` (the one place that knows that format);
- ``ComputedReference`` builds one from the training split the config names
  (``data.train``), for models that carry no stored profile. The predictions
  reference is then the model's own predictions on that split, and the quality
  reference the model's ``metrics.json``.
"""

from __future__ import annotations

import csv
import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ci_ml.monitor.interface import (
    ColumnKind,
    ColumnReference,
    Histogram,
    MonitorInputError,
    PredictionReference,
    Reference,
    ReferenceSource,
    Task,
)
from ci_ml.monitor.sketch import category_key, number_or_nan

FORMAT = "ci-ml/monitor-reference/1"
MAX_EXACT_VALUES = 128     # up to this many distinct values, each value is its own bin
QUANTILE_BINS = 100        # beyond: percentile bins
MAX_CSV_FIELD = 1 << 20


def numeric_histogram(values: np.ndarray) -> Histogram:
    """Reference bins for one numeric column (NaN are ignored)."""
    present = values[~np.isnan(values)]
    if present.size == 0:
        return Histogram((), (0,))
    cuts = np.unique(present)
    if cuts.size > MAX_EXACT_VALUES:
        cuts = np.unique(np.quantile(present, np.linspace(0.0, 1.0, QUANTILE_BINS + 1)))
    # A first edge just below the minimum: bin 0 then holds only values below the range.
    edges = np.concatenate([[np.nextafter(cuts[0], -np.inf)], cuts])
    counts = np.bincount(np.searchsorted(edges, present, side="left"), minlength=edges.size + 1)
    return Histogram(tuple(float(e) for e in edges), tuple(int(c) for c in counts))


def column_reference(name: str, raw: Sequence[Any]) -> ColumnReference:
    """Infer the kind of a column from its values and profile it: numbers when every
    present value is a number, categories otherwise."""
    parsed = [number_or_nan(v) for v in raw]
    if all(valid for _, valid in parsed):
        values = np.asarray([v for v, _ in parsed], dtype=float)
        present = values[~np.isnan(values)]
        if present.size:
            return ColumnReference(
                name, ColumnKind.NUMBER, count=int(present.size),
                missing=int(values.size - present.size), histogram=numeric_histogram(values),
                minimum=float(present.min()), maximum=float(present.max()),
                mean=float(present.mean()), std=float(present.std(ddof=1)) if present.size > 1
                else 0.0)
    keys = [category_key(v) for v in raw]
    counts = Counter(k for k in keys if k is not None)
    return ColumnReference(name, ColumnKind.CATEGORY, count=sum(counts.values()),
                           missing=sum(1 for k in keys if k is None),
                           categories=dict(sorted(counts.items())))


def read_csv_columns(path: Path, key: str) -> dict[str, list[str]]:
    """A CSV's columns by header name; errors name the file (and the config key)."""
    if not path.is_file():
        raise MonitorInputError(f"{key}: {path}: data file not found")
    csv.field_size_limit(MAX_CSV_FIELD)
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if not header:
                raise MonitorInputError(f"{key}: {path}: empty CSV, expected a header row")
            if len(set(header)) != len(header):
                raise MonitorInputError(f"{key}: {path}: duplicate column names in the header")
            columns: dict[str, list[str]] = {h: [] for h in header}
            for line, row in enumerate(reader, start=2):
                if len(row) != len(header):
                    raise MonitorInputError(f"{key}: {path}: line {line} has {len(row)} fields, "
                                            f"the header {len(header)}")
                for h, v in zip(header, row, strict=True):
                    columns[h].append(v)
    except (UnicodeDecodeError, csv.Error, OSError) as exc:
        raise MonitorInputError(f"{key}: {path}: not a readable UTF-8 CSV ({exc})") from exc
    return columns


def build_reference(columns: Mapping[str, Sequence[Any]], features: Sequence[str], *,
                    source: str, task: Task = Task.CLASSIFICATION,
                    predictions: PredictionReference | None = None,
                    metrics: Mapping[str, float] | None = None, metric_rows: int = 0
                    ) -> Reference:
    missing = [f for f in features if f not in columns]
    if missing:
        raise MonitorInputError(f"{source}: no column(s) {', '.join(missing[:5])} for the "
                                "model's features")
    refs = tuple(column_reference(f, columns[f]) for f in features)
    rows = len(next(iter(columns.values()))) if columns else 0
    return Reference(columns=refs, rows=rows, source=source, task=task,
                     predictions=predictions, metrics=dict(metrics or {}),
                     metric_rows=metric_rows, feature_order=tuple(features))


# -------------------------------------------------------------------- JSON form

def _histogram_json(h: Histogram | None) -> dict[str, Any] | None:
    return None if h is None else {"edges": list(h.edges), "counts": list(h.counts)}


def _histogram(data: Any, where: str) -> Histogram | None:
    if data is None:
        return None
    try:
        edges = tuple(float(e) for e in data["edges"])
        counts = tuple(int(c) for c in data["counts"])
        if any(not math.isfinite(e) for e in edges) or list(edges) != sorted(edges):
            raise ValueError("edges must be finite and ascending")
        if any(c < 0 for c in counts):
            raise ValueError("counts must not be negative")
        return Histogram(edges, counts)
    except (KeyError, TypeError, ValueError) as exc:
        raise MonitorInputError(f"{where}: bad histogram ({exc})") from exc


def to_json(ref: Reference) -> dict[str, Any]:
    preds = ref.predictions
    return {
        "format": FORMAT, "source": ref.source, "rows": ref.rows, "task": ref.task.value,
        "feature_order": list(ref.feature_order), "metrics": dict(ref.metrics),
        "metric_rows": ref.metric_rows,
        "columns": [{
            "name": c.name, "kind": c.kind.value, "count": c.count, "missing": c.missing,
            "histogram": _histogram_json(c.histogram), "categories": dict(c.categories),
            "min": c.minimum, "max": c.maximum, "mean": c.mean, "std": c.std,
            "complete": c.complete,
        } for c in ref.columns],
        "predictions": None if preds is None else {
            "task": preds.task.value, "classes": dict(preds.classes),
            "values": _histogram_json(preds.values), "source": preds.source},
    }


def from_json(data: Any, where: str) -> Reference:
    if not isinstance(data, Mapping) or data.get("format") != FORMAT:
        raise MonitorInputError(f"{where}: not a ci-ml monitoring reference (format {FORMAT})")
    try:
        columns = []
        for c in data["columns"]:
            kind = ColumnKind(c["kind"])
            columns.append(ColumnReference(
                str(c["name"]), kind, int(c["count"]), int(c["missing"]),
                histogram=_histogram(c.get("histogram"), f"{where}: column {c['name']}"),
                categories={str(k): int(v) for k, v in (c.get("categories") or {}).items()},
                minimum=c.get("min"), maximum=c.get("max"), mean=c.get("mean"), std=c.get("std"),
                complete=bool(c.get("complete", True))))
        p = data.get("predictions")
        preds = None if p is None else PredictionReference(
            Task(p["task"]), {str(k): int(v) for k, v in (p.get("classes") or {}).items()},
            _histogram(p.get("values"), f"{where}: predictions"), str(p.get("source", "")))
        return Reference(columns=tuple(columns), rows=int(data["rows"]),
                         source=str(data.get("source", where)), task=Task(data.get("task",
                                                                                  "classification")),
                         predictions=preds,
                         metrics={str(k): float(v) for k, v in (data.get("metrics") or {}).items()},
                         metric_rows=int(data.get("metric_rows", 0)),
                         feature_order=tuple(str(f) for f in data.get("feature_order") or
                                             [c.name for c in columns]))
    except (KeyError, TypeError, ValueError) as exc:
        raise MonitorInputError(f"{where}: malformed monitoring reference ({exc!s})") from exc


def read_json_file(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise MonitorInputError(f"{path}: {what} not found") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise MonitorInputError(f"{path}: {what} is not readable JSON ({exc})") from exc


class StoredReference(ReferenceSource):
    """A reference file: ci-ml's monitoring form, or the data step's training profile."""

    def __init__(self, path: Path, features: Sequence[str] = ()) -> None:
        self.path = path
        self.features = tuple(features)

    def load(self) -> Reference:
        from ci_ml.monitor import profile

        data = read_json_file(self.path, "reference")
        if isinstance(data, Mapping) and data.get("format") == FORMAT:
            return from_json(data, str(self.path))
        return profile.reference_from_profile(data, str(self.path), self.features)
