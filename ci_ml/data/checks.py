"""Data checks on the train/test pair: schema, quality, leakage and drift.

Each check is a pure function of the loaded tables returning a ``CheckResult``;
thresholds come from ``data.checks`` in the config.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ci_ml.data.loader import DataBundle, Table


@dataclass(frozen=True)
class CheckResult:
    name: str
    passed: bool
    value: float
    threshold: float
    message: str
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, "value": round(self.value, 6),
                "threshold": self.threshold, "message": self.message, "details": dict(self.details)}


@dataclass(frozen=True)
class DataReport:
    checks: tuple[CheckResult, ...]
    rows: Mapping[str, int]
    features: int
    classes: tuple[str, ...]
    hashes: Mapping[str, str]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def to_json(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "rows": dict(self.rows),
            "features": self.features,
            "classes": list(self.classes),
            "sha256": dict(self.hashes),
            "checks": [c.to_json() for c in self.checks],
        }


def _missing(table: Table, limit: float, which: str) -> CheckResult:
    frac = float(np.isnan(table.x).mean()) if table.x.size else 0.0
    return CheckResult(f"missing_values_{which}", frac <= limit, frac, limit,
                       f"{frac:.2%} of {which} feature values are missing")


def _duplicates(table: Table, limit: float) -> CheckResult:
    rows = Counter(r.tobytes() for r in np.ascontiguousarray(table.x))
    dup = sum(n - 1 for n in rows.values())
    frac = dup / max(len(table.x), 1)
    return CheckResult("duplicate_rows_train", frac <= limit, frac, limit,
                       f"{dup} duplicate rows in train ({frac:.2%})")


def _overlap(train: Table, test: Table, limit: float) -> CheckResult:
    seen = {r.tobytes() for r in np.ascontiguousarray(train.x)}
    shared = sum(1 for r in np.ascontiguousarray(test.x) if r.tobytes() in seen)
    frac = shared / max(len(test.x), 1)
    return CheckResult("train_test_overlap", frac <= limit, frac, limit,
                       f"{shared} test rows also appear in train ({frac:.2%}): leakage")


def _class_balance(table: Table, limit: float) -> CheckResult:
    counts = Counter(table.labels)
    smallest = min(counts.values()) / len(table.labels)
    return CheckResult("min_class_fraction", smallest >= limit, smallest, limit,
                       f"smallest class holds {smallest:.2%} of train rows",
                       {"counts": dict(sorted(counts.items()))})


def _constant_features(table: Table) -> CheckResult:
    with np.errstate(invalid="ignore"):
        spread = np.nanmax(table.x, axis=0) - np.nanmin(table.x, axis=0)
    constant = [f for f, s in zip(table.features, spread, strict=True) if not s > 0]
    frac = len(constant) / max(len(table.features), 1)
    # Constant features are reported, not failed: images have blank border pixels.
    return CheckResult("constant_features", True, frac, 1.0,
                       f"{len(constant)} constant feature(s) in train",
                       {"features": constant[:20]})


def psi(expected: np.ndarray, actual: np.ndarray, bins: int = 10) -> float:
    """Population stability index of one feature, on the expected sample's quantile bins."""
    expected = expected[~np.isnan(expected)]
    actual = actual[~np.isnan(actual)]
    if expected.size == 0 or actual.size == 0:
        return 0.0
    # Fewer bins for small samples: ten bins over 30 rows measure noise, not drift.
    bins = max(2, min(bins, actual.size // 20))
    edges = np.unique(np.quantile(expected, np.linspace(0, 1, bins + 1)))
    if edges.size < 2:
        # A constant feature drifts only if the other sample leaves that constant.
        return 0.0 if np.all(actual == expected[0]) else float("inf")
    edges[0], edges[-1] = -np.inf, np.inf
    e = np.histogram(expected, edges)[0] / expected.size
    a = np.histogram(actual, edges)[0] / actual.size
    e, a = np.clip(e, 1e-4, None), np.clip(a, 1e-4, None)
    return float(np.sum((a - e) * np.log(a / e)))


def _drift(train: Table, test: Table, max_psi: float, limit: float) -> CheckResult:
    scores = {f: psi(train.x[:, j], test.x[:, j]) for j, f in enumerate(train.features)}
    drifted = sorted((f for f, s in scores.items() if s > max_psi), key=lambda f: -scores[f])
    frac = len(drifted) / max(len(scores), 1)
    top = {f: round(scores[f], 4) for f in drifted[:10]}
    return CheckResult("feature_drift", frac <= limit, frac, limit,
                       f"{len(drifted)} of {len(scores)} features drifted (PSI > {max_psi})",
                       {"drifted": top, "max_psi": max(scores.values(), default=0.0)})


def run_checks(bundle: DataBundle, limits: Mapping[str, Any]) -> DataReport:
    train, test = bundle.train, bundle.test
    checks = (
        _missing(train, float(limits["max_missing_fraction"]), "train"),
        _missing(test, float(limits["max_missing_fraction"]), "test"),
        _duplicates(train, float(limits["max_duplicate_fraction"])),
        _overlap(train, test, float(limits["max_train_test_overlap"])),
        _class_balance(train, float(limits["min_class_fraction"])),
        _constant_features(train),
        _drift(train, test, float(limits["max_drift_psi"]), float(limits["max_drifted_fraction"])),
    )
    return DataReport(
        checks=checks,
        rows={"train": len(train.x), "test": len(test.x)},
        features=len(train.features),
        classes=bundle.classes,
        hashes={"train": train.sha256, "test": test.sha256},
    )
