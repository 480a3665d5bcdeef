"""Data checks, per column, streaming: schema, quality, leakage and drift.

One pass over the training split profiles every column (``ci_ml.data.profile``) and
hashes every row; the schema comes from ``data.schema`` or is inferred from that
profile; one pass over the test split profiles it against the schema (ranges,
categories, kinds) and hashes its rows. Memory: the reader's batches, per column at
most ``CATEGORY_CAP`` categories and a fixed-size sample; the duplicate and leakage hashes
(``ci_ml.data.rowhash``) spill to disk past a fixed budget. Thresholds come from
``data.checks``.

Rows are hashed over the feature and target columns only: a row index or a unique
id would make every row look distinct and hide a leak.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ci_ml.config import Config
from ci_ml.data.drift import category_drift, psi
from ci_ml.data.loader import open_split
from ci_ml.data.profile import ColumnProfile, ColumnProfiler
from ci_ml.data.rowhash import Partition, RowHashSet, row_hashes
from ci_ml.data.schema import (
    CATEGORY,
    CLASSIFICATION,
    DATETIME,
    FEATURE,
    NUMBER,
    TARGET,
    DataSchema,
    check_columns,
    column_kind,
    identifier_reason,
    infer_schema,
    read_schema,
)
from ci_ml.data.source import DataFile, iter_batches
from ci_ml.errors import InputError
from ci_ml.fsutil import sha256_file

Progress = Callable[[str, int], None]


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
    schema: DataSchema | None = None
    columns: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failed(self) -> list[str]:
        return [c.name for c in self.checks if not c.passed]

    def to_json(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "rows": dict(self.rows),
            "features": self.features,
            "task": self.schema.task if self.schema else None,
            "target": self.schema.target if self.schema else None,
            "classes": list(self.classes),
            "identifiers": {c.name: c.reason for c in self.schema.identifiers}
            if self.schema else {},
            "sha256": dict(self.hashes),
            "checks": [c.to_json() for c in self.checks],
            "columns": {k: dict(v) for k, v in self.columns.items()},
        }


# ------------------------------------------------------------------------- passes

@dataclass
class _Pass:
    """One streamed split: column profiles and row hashes."""

    profiles: dict[str, ColumnProfile]
    rows: int
    hashes: RowHashSet
    hashed: tuple[str, ...]


def _stream(source: DataFile, columns: Sequence[str], refs: Mapping[str, Any],
            hash_columns: Callable[[dict[str, ColumnProfiler]], Sequence[str]] | Sequence[str],
            seed: int, progress: Progress | None, hashes: RowHashSet) -> _Pass:
    """Profile ``columns`` and hash rows over the hash columns (decided after the first
    batch when given as a function of the profilers) into ``hashes``."""
    profilers = {c: ColumnProfiler(c, seed + i, refs.get(c)) for i, c in enumerate(columns)}
    chosen: Sequence[str] | None = None if callable(hash_columns) else list(hash_columns)
    rows = 0
    for batch in iter_batches(source, columns):
        for name, arr in zip(batch.schema.names, batch.columns, strict=True):
            profilers[name].update(arr)
        if chosen is None:
            assert callable(hash_columns)
            chosen = list(hash_columns(profilers))
        hashes.add(row_hashes(batch.select(chosen)))
        rows += batch.num_rows
        if progress:
            progress(source.key, rows)
    return _Pass({c: p.result() for c, p in profilers.items()}, rows, hashes,
                 tuple(chosen or ()))


def _hash_only(source: DataFile, columns: Sequence[str], hashes: RowHashSet) -> RowHashSet:
    for batch in iter_batches(source, columns):
        hashes.add(row_hashes(batch))
    return hashes


def _tentative(target: str, id_columns: Sequence[str] | None,
               features: Sequence[str] | None) -> Callable[[dict[str, ColumnProfiler]],
                                                           list[str]]:
    """After the first batch: the columns that look like features or the target (identifiers
    are unique from their first rows on, so one batch tells them)."""
    def choose(profilers: dict[str, ColumnProfiler]) -> list[str]:
        keep = []
        for name, prof in profilers.items():
            if name == target:
                keep.append(name)
                continue
            if features is not None:
                if name in features:
                    keep.append(name)
                continue
            if id_columns is not None:
                if name not in id_columns:
                    keep.append(name)
                continue
            p = prof.result()
            if not identifier_reason(p, column_kind(p)):
                keep.append(name)
        return keep
    return choose


# ------------------------------------------------------------------------- the checks

def _share(n: int, d: int) -> float:
    return n / d if d else 0.0


def _worst(values: Mapping[str, float]) -> tuple[float, dict[str, float]]:
    bad = {k: round(v, 6) for k, v in sorted(values.items(), key=lambda kv: -kv[1]) if v > 0}
    return (max(values.values()) if values else 0.0), dict(list(bad.items())[:20])


def _per_column(name: str, label: str, values: Mapping[str, float], limit: float,
                what: str, extra: Mapping[str, Any] | None = None) -> CheckResult:
    worst, shown = _worst(values)
    failing = [k for k, v in values.items() if v > limit + 1e-12]
    msg = (f"{len(failing)} column(s) with {what} above {limit:.1%}: {', '.join(failing[:5])}"
           if failing else f"{what}: at most {worst:.2%} in any column ({label})")
    return CheckResult(name, not failing, worst, limit, msg,
                       {"columns": shown, **(extra or {})})


def run_checks(config: Config, progress: Progress | None = None) -> DataReport:
    with ExitStack() as files:
        return _run_checks(config, progress, files)


def _run_checks(config: Config, progress: Progress | None, files: ExitStack) -> DataReport:
    data = config.section("data")
    limits: Mapping[str, Any] = data["checks"]
    train_src, test_src = open_split(config, "train"), open_split(config, "test")
    target = str(data["target"])
    features = list(data["features"]) if data.get("features") else None
    ids = data.get("id_columns")
    id_cols = list(ids) if ids is not None else None
    seed = int(config.section("train").get("seed", 0))
    given = read_schema(config.resolve(str(data["schema"]))) if data.get("schema") else None
    # One partition for both splits: the overlap is counted bucket against bucket.
    partition = Partition()

    def hash_set(unique: bool) -> RowHashSet:
        return files.enter_context(RowHashSet(partition, unique=unique))

    if given is not None:
        check_columns(given, train_src.columns, train_src.key, train_src.path)
        refs = {c.name: c.reference() for c in given.columns}
        cols = [c for c in train_src.columns if c in refs]
        keep = [c.name for c in given.columns if c.role in (FEATURE, TARGET)]
        train = _stream(train_src, cols, refs, keep, seed, progress, hash_set(True))
        schema = given
    else:
        if target not in train_src.columns:
            raise InputError(f"data.train: {train_src.path}: no target column {target!r}; "
                             f"columns are: {', '.join(train_src.columns[:10])}")
        cols = list(train_src.columns)
        train = _stream(train_src, cols, {}, _tentative(target, id_cols, features), seed,
                        progress, hash_set(True))
        schema = infer_schema(train.profiles, train.rows, target=target,
                              task=str(data.get("task", "auto")), features=features,
                              id_columns=id_cols, source={"path": train_src.path.name})
        keep = [c.name for c in schema.columns if c.role in (FEATURE, TARGET)]
        if set(keep) != set(train.hashed):
            # The first batch misjudged an identifier: hash the rows again, right columns.
            train.hashes.close()
            train.hashes = _hash_only(train_src, keep, hash_set(True))
    check_columns(schema, test_src.columns, test_src.key, test_src.path)
    refs = {c.name: c.reference() for c in schema.columns}
    test_cols = [c for c in schema.names if c in test_src.columns]
    test = _stream(test_src, test_cols, refs, keep, seed + 1000, progress, hash_set(False))
    checks = _checks(schema, train, test, limits, given is not None)
    return DataReport(
        checks=tuple(checks), rows={"train": train.rows, "test": test.rows},
        features=len(schema.features),
        classes=_classes(schema, train.profiles[schema.target]),
        hashes={"train": sha256_file(train_src.path), "test": sha256_file(test_src.path)},
        schema=schema, columns=_column_table(schema, train, test))


def _classes(schema: DataSchema, target: ColumnProfile) -> tuple[str, ...]:
    if schema.task != CLASSIFICATION or target.counts is None:
        return ()
    labels = list(target.counts)
    try:
        return tuple(sorted(labels, key=float))
    except ValueError:
        return tuple(sorted(labels))


def _checks(schema: DataSchema, train: _Pass, test: _Pass, limits: Mapping[str, Any],
            train_against_schema: bool) -> list[CheckResult]:
    feats = schema.features
    out: list[CheckResult] = []
    # Missing values: per column and split, and their growth from train to test.
    miss = {f"{s}:{c.name}": p[c.name].missing_share
            for s, p in (("train", train.profiles), ("test", test.profiles)) for c in feats
            if c.name in p}
    out.append(_per_column("missing_values", "train and test", miss,
                           float(limits["max_missing_fraction"]), "missing values"))
    growth = {}
    for c in feats:
        tr, te = train.profiles[c.name], test.profiles[c.name]
        p = tr.missing_share
        # Beyond two standard errors of the test share: a shift, not sampling noise.
        slack = 2 * math.sqrt(max(p * (1 - p), 1e-12) / max(te.rows, 1))
        growth[c.name] = max(0.0, te.missing_share - p - slack)
    out.append(_per_column("missing_increase", "test vs train", growth,
                           float(limits["max_missing_increase"]),
                           "a missing share grown beyond sampling noise"))
    # Values that do not fit the column's kind.
    invalid = {}
    for split, profs in (("train", train.profiles), ("test", test.profiles)):
        for c in feats:
            prof = profs[c.name]
            if c.kind == NUMBER:
                invalid[f"{split}:{c.name}"] = _share(prof.present - prof.numeric_like, prof.rows)
            elif c.kind == DATETIME:
                invalid[f"{split}:{c.name}"] = _share(prof.present - prof.date_like, prof.rows)
    out.append(_per_column("invalid_values", "kinds from the schema", invalid,
                           float(limits["max_invalid_fraction"]),
                           "values that do not fit their column's kind"))
    # New categories and out-of-range values, against the schema (train's own, or given).
    splits = [("test", test)] + ([("train", train)] if train_against_schema else [])
    new_cats, seen_new, ranges = {}, {}, {}
    for split, run in splits:
        for c in feats:
            prof = run.profiles[c.name]
            if c.kind == CATEGORY and c.categories:
                new_cats[f"{split}:{c.name}"] = _share(prof.unseen, prof.rows)
                if prof.unseen_values:
                    seen_new[f"{split}:{c.name}"] = dict(list(prof.unseen_values.items())[:5])
            if c.kind == NUMBER and c.low is not None:
                ranges[f"{split}:{c.name}"] = _share(prof.below + prof.above, prof.rows)
    out.append(_per_column("new_categories", "categories outside the training split's",
                           new_cats, float(limits["max_new_category_fraction"]),
                           "rows with categories never seen in training",
                           {"values": seen_new}))
    out.append(_per_column("out_of_range", "values outside the training range", ranges,
                           float(limits["max_out_of_range_fraction"]),
                           "values outside the training range"))
    out += [_duplicates(train, float(limits["max_duplicate_fraction"])),
            _overlap(train, test, float(limits["max_train_test_overlap"]))]
    if schema.task == CLASSIFICATION:
        out.append(_class_balance(train.profiles[schema.target],
                                  float(limits["min_class_fraction"])))
    out.append(_constant(schema))
    out.append(_drift(schema, train, test, limits))
    out.append(_identifiers(schema))
    return out


def _duplicates(train: _Pass, limit: float) -> CheckResult:
    dup = train.hashes.duplicates()
    frac = _share(dup, train.rows)
    return CheckResult("duplicate_rows_train", frac <= limit, frac, limit,
                       f"{dup} duplicate rows in train ({frac:.2%})",
                       {"columns_compared": list(train.hashed)})


def _overlap(train: _Pass, test: _Pass, limit: float) -> CheckResult:
    shared = test.hashes.found_in(train.hashes)
    frac = _share(shared, test.rows)
    return CheckResult("train_test_overlap", frac <= limit, frac, limit,
                       f"{shared} test rows also appear in train ({frac:.2%}): leakage",
                       {"rows": shared, "columns_compared": list(test.hashed)})


def _class_balance(target: ColumnProfile, limit: float) -> CheckResult:
    counts = dict(target.counts or {})
    present = max(target.present, 1)
    smallest = min(counts.values()) / present if counts else 0.0
    return CheckResult("min_class_fraction", smallest >= limit, smallest, limit,
                       f"smallest class holds {smallest:.2%} of train rows",
                       {"counts": dict(sorted(counts.items())[:100])})


def _constant(schema: DataSchema) -> CheckResult:
    constant = [c.name for c in schema.features if c.distinct <= 1]
    frac = _share(len(constant), len(schema.features))
    # Reported, not failed: images have blank border pixels.
    return CheckResult("constant_features", True, frac, 1.0,
                       f"{len(constant)} constant feature(s) in train", {"features": constant[:20]})


def _identifiers(schema: DataSchema) -> CheckResult:
    ids = {c.name: c.reason for c in schema.identifiers}
    msg = (f"{len(ids)} identifier-like column(s) kept out of the features: "
           + ", ".join(f"{k} ({v})" for k, v in list(ids.items())[:5])) if ids \
        else "no identifier-like columns"
    return CheckResult("identifier_columns", True, float(len(ids)), 0.0, msg, {"columns": ids})


def _drift(schema: DataSchema, train: _Pass, test: _Pass,
           limits: Mapping[str, Any]) -> CheckResult:
    max_psi = float(limits["max_drift_psi"])
    alpha, effect = float(limits["drift_p_value"]), float(limits["min_drift_effect"])
    scores: dict[str, dict[str, Any]] = {}
    for c in schema.features:
        tr, te = train.profiles[c.name], test.profiles[c.name]
        if c.kind == NUMBER and tr.sample and te.sample:
            value = psi(np.asarray(tr.sample), np.asarray(te.sample))
            scores[c.name] = {"test": "psi", "psi": _round(value), "drifted": value > max_psi}
        elif c.kind == CATEGORY and tr.counts is not None and te.counts is not None:
            d = category_drift(tr.counts, te.counts)
            scores[c.name] = {"test": "chi-square", "statistic": _round(d.statistic),
                              "dof": d.dof, "p_value": _round(d.p_value),
                              "cramers_v": _round(d.cramers_v),
                              "drifted": d.p_value < alpha and d.cramers_v >= effect}
    drifted = [k for k, v in scores.items() if v["drifted"]]
    limit = float(limits["max_drifted_fraction"])
    frac = _share(len(drifted), len(scores))
    return CheckResult("feature_drift", frac <= limit, frac, limit,
                       f"{len(drifted)} of {len(scores)} features drifted (PSI > {max_psi} for "
                       f"numbers; chi-square p < {alpha} with Cramer's V >= {effect} for "
                       "categories)",
                       {"drifted": {k: scores[k] for k in drifted[:10]},
                        "max_psi": _round(max((v["psi"] if v["psi"] is not None else math.inf
                                               for v in scores.values() if "psi" in v),
                                              default=0.0)),
                        "per_column": scores})


def _round(v: float) -> float | None:
    return round(v, 6) if math.isfinite(v) else None


def _column_table(schema: DataSchema, train: _Pass, test: _Pass) -> dict[str, dict[str, Any]]:
    out = {}
    for c in schema.columns:
        row: dict[str, Any] = {"kind": c.kind, "role": c.role}
        if c.reason:
            row["reason"] = c.reason
        if c.note:
            row["note"] = c.note
        for split, run in (("train", train), ("test", test)):
            p = run.profiles.get(c.name)
            if p is None:
                continue
            stats: dict[str, Any] = {"missing_share": round(p.missing_share, 6)}
            if c.kind == NUMBER and p.count:
                stats.update({"min": p.low, "max": p.high, "mean": _round(p.mean or 0.0)})
            if c.kind == CATEGORY:
                stats["distinct"] = p.distinct
            if p.unseen:
                stats["unseen"] = p.unseen
            if p.below or p.above:
                stats["out_of_range"] = p.below + p.above
            row[split] = stats
        out[c.name] = row
    return out

