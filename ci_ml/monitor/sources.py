"""Which reference a monitoring run uses, and the one computed from the training data.

Order: ``--reference`` (or ``monitor.reference``), else the training profile stored
beside the model card, else one computed from ``data.train`` (and the report says
which). A computed reference is cached beside the report as
``monitor-reference.json`` keyed by the hashes of the data and the model, so a
scheduled job does not rebuild it from the data every time.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ci_ml.fsutil import atomic_write_json, sha256_file
from ci_ml.monitor import profile
from ci_ml.monitor.interface import (
    MonitorInputError,
    PredictionReference,
    Reference,
    ReferenceSource,
    Task,
)
from ci_ml.monitor.model import MonitoredModel
from ci_ml.monitor.reference import (
    StoredReference,
    build_reference,
    from_json,
    numeric_histogram,
    read_csv_columns,
    read_json_file,
    to_json,
)
from ci_ml.monitor.sketch import number_or_nan

CACHE_NAME = "monitor-reference.json"


def model_metrics(model_dir: Path) -> tuple[dict[str, float], int]:
    """The model's held-out quality (``metrics.json`` beside it), and on how many rows."""
    path = model_dir / "metrics.json"
    if not path.is_file():
        return {}, 0
    data = read_json_file(path, "model metrics")
    if not isinstance(data, Mapping):
        return {}, 0
    metrics = {k: float(data[k]) for k in ("accuracy", "mae", "rmse", "r2")
               if isinstance(data.get(k), int | float)}
    rows = data.get("samples")
    return metrics, int(rows) if isinstance(rows, int) else 0


class ComputedReference(ReferenceSource):
    """A reference profiled from the training CSV the config names, for a model without one."""

    def __init__(self, train: Path, target: str, model: MonitoredModel | None,
                 cache: Path | None = None) -> None:
        self.train, self.target, self.model, self.cache = train, target, model, cache

    def _key(self) -> str:
        model = self.model.identity.digest if self.model else "-"
        return f"{sha256_file(self.train)}:{model}:{self.target}"

    def _cached(self, key: str) -> Reference | None:
        if self.cache is None or not self.cache.is_file():
            return None
        try:
            data = json.loads(self.cache.read_text("utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            return None
        if not isinstance(data, Mapping) or data.get("key") != key:
            return None
        try:
            return from_json(data.get("reference"), str(self.cache))
        except MonitorInputError:
            return None

    def load(self) -> Reference:
        if not self.train.is_file():
            raise MonitorInputError(f"data.train: {self.train}: data file not found (needed to "
                                    "compute the reference; or pass --reference PATH)")
        key = self._key()
        cached = self._cached(key)
        if cached is not None:
            return cached
        columns = read_csv_columns(self.train, "data.train")
        if self.target not in columns:
            raise MonitorInputError(f"data.train: {self.train}: no target column "
                                    f"{self.target!r}")
        features = (list(self.model.features) if self.model else
                    [c for c in columns if c != self.target])
        predictions = self._predictions(columns, features)
        metrics, metric_rows = model_metrics(self.model.directory) if self.model else ({}, 0)
        ref = build_reference(columns, features, source=f"computed from data.train "
                              f"({self.train.name}, {len(columns[self.target])} rows)",
                              task=self.model.task if self.model else Task.CLASSIFICATION,
                              predictions=predictions, metrics=metrics, metric_rows=metric_rows)
        if self.cache is not None:
            atomic_write_json(self.cache, {"key": key, "reference": to_json(ref)})
        return ref

    def _predictions(self, columns: Mapping[str, list[str]], features: list[str]
                     ) -> PredictionReference:
        if self.model is not None:
            raw = list(zip(*(columns[f] for f in features), strict=True))
            parsed = [[_cell(v) for v in row] for row in raw]
            preds = self.model.predict(parsed)
            if preds is None:       # a decoder that wants named fields
                preds = self.model.predict([dict(zip(features, row, strict=True))
                                            for row in parsed])
            source = "the model's predictions on data.train"
            if preds is not None and self.model.task is Task.REGRESSION:
                return PredictionReference(Task.REGRESSION, values=numeric_histogram(
                    np.asarray(preds, dtype=float)), source=source)
            if preds is not None:
                counts = Counter(str(p) for p in preds)
                return PredictionReference(Task.CLASSIFICATION, dict(sorted(counts.items())),
                                           source=source)
        target = Counter(v.strip() for v in columns[self.target] if v.strip())
        return PredictionReference(Task.CLASSIFICATION, dict(sorted(target.items())),
                                   source="the target's distribution in data.train")


def _cell(text: str) -> Any:
    """A CSV cell as a client would send it: a number, null when missing, else the string."""
    number, valid = number_or_nan(text)
    if not valid:
        return text
    return None if math.isnan(number) else number


class WithModelMetrics(ReferenceSource):
    """A stored reference, completed with the model's own held-out metrics when it has none
    (the training profile describes data, not the model's quality)."""

    def __init__(self, inner: StoredReference, model: MonitoredModel) -> None:
        self.inner, self.model = inner, model

    def load(self) -> Reference:
        ref = self.inner.load()
        if ref.metrics:
            return ref
        metrics, rows = model_metrics(self.model.directory)
        return replace(ref, metrics=metrics, metric_rows=rows)


def choose_reference(*, explicit: Path | None, model: MonitoredModel | None,
                     train: Path | None, target: str | None, cache: Path | None
                     ) -> ReferenceSource:
    features = model.features if model else ()
    if explicit is not None:
        source = StoredReference(explicit, features)
        return WithModelMetrics(source, model) if model is not None else source
    if model is not None:
        stored = profile.find_profile(model.directory)
        if stored is not None:
            return WithModelMetrics(StoredReference(stored, features), model)
    if train is None or target is None:
        raise MonitorInputError("no training reference: the model has no stored profile and "
                                "the config names no data.train (pass --reference PATH)")
    return ComputedReference(train, target, model, cache)


def describe(source: ReferenceSource) -> dict[str, Any]:
    if isinstance(source, WithModelMetrics):
        source = source.inner
    if isinstance(source, StoredReference):
        return {"kind": "stored", "path": str(source.path)}
    if isinstance(source, ComputedReference):
        return {"kind": "computed", "path": str(source.train)}
    return {"kind": type(source).__name__}
