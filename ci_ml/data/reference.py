"""The training reference profile stored with a model (``reference-profile.json``).

What monitoring compares served traffic with, per raw input field and for the target
and the model's predictions. Format ``ci-ml/reference-profile/1``::

    {"format": "ci-ml/reference-profile/1", "rows": 275,
     "source": {"path": "penguins.train.csv", "sha256": "..."},
     "columns": {
       "<number field>": {"kind": "number", "rows": 275, "missing_share": 0.007,
          "count": 273, "mean": 43.9, "std": 5.4, "min": 32.1, "max": 59.6,
          "quantiles": {"q": [0.0, 0.05, ..., 1.0], "values": [...]},
          "histogram": {"edges": [...inner edges: the deciles, and [v, next float) around
                                  a value holding a tenth of the data or more...],
                        "shares": [...one more than edges...]}},
       "<category field>": {"kind": "category", "rows": 275, "missing_share": 0.03,
          "distinct": 3, "frequencies": {"Biscoe": 0.49, ...}},
       "<date field>": {"kind": "datetime", "rows": ..., "missing_share": ..., "min": <days>,
          "max": <days>}},
     "target": {...one of the above: the training labels or values...},
     "prediction": {...the model's predictions on the test split, same shape...}}

Shares are of all rows (missing included) for categories, of present values for
histograms. Numbers come from a seeded reservoir sample of up to 8192 values
(``ci_ml.data.profile``): exact for small data, a sketch for large data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ci_ml.data.profile import ColumnProfile
from ci_ml.data.schema import CATEGORY, DATETIME, NUMBER, ColumnSchema

FORMAT = "ci-ml/reference-profile/1"
QUANTILES = tuple(round(i / 20, 2) for i in range(21))


def _number(sample: Sequence[float] | np.ndarray, rows: int, missing: int) -> dict[str, Any]:
    values = np.asarray(sample, dtype=np.float64)
    out: dict[str, Any] = {"kind": NUMBER, "rows": rows,
                           "missing_share": round(missing / rows, 6) if rows else 0.0,
                           "count": int(rows - missing)}
    if values.size == 0:
        return out
    qs = np.quantile(values, QUANTILES)
    deciles = np.quantile(values, [i / 10 for i in range(1, 10)])
    cuts = {round(float(v), 6) for v in deciles}
    for v in np.unique(deciles):
        # A value holding a tenth of the data or more (the zeros of a sparse feature, an
        # integer feature) gets a bin of its own, [v, next float): inside one wide decile
        # bin, traffic that moved off it would look unchanged to the monitor.
        if np.count_nonzero(values == v) * 10 >= values.size:
            cuts.update((float(v), float(np.nextafter(v, np.inf))))
    edges = np.array(sorted(cuts))
    counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=edges.size + 1)
    out.update({
        "mean": round(float(values.mean()), 6), "std": round(float(values.std()), 6),
        "min": round(float(values.min()), 6), "max": round(float(values.max()), 6),
        "quantiles": {"q": list(QUANTILES), "values": [round(float(v), 6) for v in qs]},
        "histogram": {"edges": [float(v) for v in edges],
                      "shares": [round(float(c) / values.size, 6) for c in counts]},
    })
    return out


def _category(counts: Mapping[str, int], rows: int, missing: int) -> dict[str, Any]:
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return {"kind": CATEGORY, "rows": rows,
            "missing_share": round(missing / rows, 6) if rows else 0.0,
            "distinct": len(ordered),
            "frequencies": {k: round(n / rows, 6) for k, n in ordered[:200]}}


def column_reference(profile: ColumnProfile, schema: ColumnSchema) -> dict[str, Any]:
    if schema.kind == NUMBER:
        out = _number(profile.sample, profile.rows, profile.missing)
        # The exact figures where the profile has them (the sample is a sketch).
        if profile.count:
            out.update({"mean": round(profile.mean or 0.0, 6), "std": round(profile.std or 0.0, 6),
                        "min": profile.low, "max": profile.high})
        return out
    if schema.kind == CATEGORY:
        return _category(profile.counts or {}, profile.rows, profile.missing)
    if schema.kind == DATETIME:
        return {"kind": DATETIME, "rows": profile.rows,
                "missing_share": round(profile.missing_share, 6),
                "min": schema.low, "max": schema.high}
    return {"kind": schema.kind, "rows": profile.rows, "missing_share": 1.0}


def prediction_reference(task: str, labels: Sequence[str] = (),
                         values: Sequence[float] | np.ndarray = ()) -> dict[str, Any]:
    if task == "regression":
        return _number(np.asarray(values, dtype=np.float64), len(values), 0)
    counts: dict[str, int] = {}
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    return _category(counts, len(labels), 0)


def build_reference(profiles: Mapping[str, ColumnProfile], schema_columns: Sequence[ColumnSchema],
                    target: ColumnSchema, prediction: Mapping[str, Any],
                    source: Mapping[str, str], target_task: str) -> dict[str, Any]:
    rows = profiles[target.name].rows if target.name in profiles else 0
    target_ref = column_reference(profiles[target.name], target)
    if target_task == "classification" and target.kind == NUMBER:
        # Integer class labels: the monitor compares class frequencies, not a histogram.
        target_ref = _category(profiles[target.name].counts or {}, profiles[target.name].rows,
                               profiles[target.name].missing)
    return {
        "format": FORMAT, "rows": rows, "source": dict(source),
        "columns": {c.name: column_reference(profiles[c.name], c) for c in schema_columns
                    if c.name in profiles},
        "target": target_ref,
        "prediction": dict(prediction),
    }
