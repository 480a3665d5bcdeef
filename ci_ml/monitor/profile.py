"""The one reader of the training profile the data step stores beside the model card.

Everything monitoring knows about that file is here: its name
(``reference-profile.json``, format ``ci-ml/reference-profile/1``, written by
``ci_ml.data.reference``) and how its per-column statistics become a ``Reference``:

- numbers: the decile histogram (inner edges, shares of present values, bins
  ``[e[i-1], e[i])``) becomes this package's bins ``(e[i-1], e[i]]`` by moving each
  edge down by one float step, which keeps the partition of the data exactly; with
  the minimum and maximum around it. KS then compares on those ten bins, a coarser
  view than a reference computed from the data (it errs toward fewer alarms);
- categories: frequencies are shares of all rows, so counts are share x rows. The
  profile lists at most 200 categories: when the column had more (``distinct``),
  a value missing from the list may still have been seen, and the never-seen test
  is not applied to that column;
- the model's predictions on the test split (``prediction``) become the predictions
  reference; date columns are not monitored.
"""

from __future__ import annotations

import math
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
    Task,
)

FORMAT = "ci-ml/reference-profile/1"
PROFILE_NAMES: tuple[str, ...] = ("reference-profile.json",)


def find_profile(model_dir: Path) -> Path | None:
    for name in PROFILE_NAMES:
        if (model_dir / name).is_file():
            return model_dir / name
    return None


def _float(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{what} is not a finite number")
    return float(value)


def _histogram(col: Mapping[str, Any], name: str) -> Histogram:
    count = int(col.get("count") or 0)
    if count == 0 or "min" not in col:
        return Histogram((), (0,))
    low, high = _float(col["min"], f"{name}.min"), _float(col["max"], f"{name}.max")
    hist = col.get("histogram") or {}
    inner = [_float(e, f"{name}.histogram.edges") for e in hist.get("edges", [])]
    shares = [_float(s, f"{name}.histogram.shares") for s in hist.get("shares", [])]
    if len(shares) != len(inner) + 1 or sorted(inner) != inner:
        raise ValueError(f"{name}: histogram needs ascending edges and one share more")
    # [e[i-1], e[i]) == (e[i-1] - ulp, e[i] - ulp] on any data: move every inner edge down.
    cuts = [float(np.nextafter(low, -np.inf))] + [float(np.nextafter(e, -np.inf))
                                                   for e in inner] + [high]
    counts = [0] + [round(s * count) for s in shares] + [0]
    edges: list[float] = [cuts[0]]
    merged: list[int] = [counts[0]]
    for cut, n in zip(cuts[1:], counts[1:-1], strict=True):
        if cut <= edges[-1]:          # an empty bin (a decile at the minimum): drop its edge
            merged[-1] += n
            continue
        edges.append(cut)
        merged.append(n)
    merged.append(counts[-1])         # above the maximum
    return Histogram(tuple(edges), tuple(merged))


def _column(name: str, col: Mapping[str, Any]) -> ColumnReference | None:
    kind = col.get("kind")
    rows = int(col.get("rows") or 0)
    missing = round(float(col.get("missing_share") or 0.0) * rows)
    if kind == "number":
        hist = _histogram(col, name)
        count = int(col.get("count") or 0)
        return ColumnReference(
            name, ColumnKind.NUMBER, count=count, missing=rows - count if rows else missing,
            histogram=hist, minimum=col.get("min"), maximum=col.get("max"),
            mean=col.get("mean"), std=col.get("std"))
    if kind == "category":
        freqs = col.get("frequencies") or {}
        counts = {str(k): max(1, round(float(v) * rows)) for k, v in freqs.items()}
        complete = int(col.get("distinct") or len(counts)) <= len(counts)
        return ColumnReference(name, ColumnKind.CATEGORY, count=sum(counts.values()),
                               missing=missing, categories=counts, complete=complete)
    return None        # datetime and unknown kinds are not monitored


def _predictions(block: Any) -> PredictionReference | None:
    if not isinstance(block, Mapping):
        return None
    column = _column("prediction", block)
    if column is None:
        return None
    source = "the model's predictions on the test split (stored profile)"
    if column.kind is ColumnKind.NUMBER:
        return PredictionReference(Task.REGRESSION, values=column.histogram, source=source)
    return PredictionReference(Task.CLASSIFICATION, classes=dict(column.categories),
                               source=source)


def reference_from_profile(data: Any, where: str, features: Sequence[str]) -> Reference:
    if not isinstance(data, Mapping) or data.get("format") != FORMAT:
        raise MonitorInputError(f"{where}: not a monitoring reference nor a training profile "
                                f"({FORMAT}) this version of ci-ml reads")
    try:
        columns_doc = data["columns"]
        if not isinstance(columns_doc, Mapping):
            raise ValueError("'columns' is not an object")
        order = [f for f in features if f in columns_doc] or list(columns_doc)
        missing = [f for f in features if f not in columns_doc]
        if features and missing:
            raise ValueError(f"no profile of the model's feature(s) {', '.join(missing[:5])}")
        columns = tuple(c for c in (_column(str(n), columns_doc[n]) for n in order)
                        if c is not None)
        predictions = _predictions(data.get("prediction"))
        source = data.get("source") or {}
        return Reference(
            columns=columns, rows=int(data.get("rows") or 0),
            source=f"stored training profile ({Path(where).name}"
                   + (f", from {source.get('path')}" if isinstance(source, Mapping)
                      and source.get("path") else "") + ")",
            task=predictions.task if predictions else Task.CLASSIFICATION,
            predictions=predictions, feature_order=tuple(order))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise MonitorInputError(f"{where}: malformed training profile ({exc!s})") from exc
