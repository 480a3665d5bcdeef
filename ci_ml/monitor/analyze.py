"""One pass over the window: count features, predictions, labels and latencies; then test.

``WindowStats`` consumes log records one at a time (memory bounded by the
reference, see ``sketch``); ``drift`` turns the counts into per-feature and
prediction drift with the policy's thresholds and correction.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ci_ml.monitor import stats
from ci_ml.monitor.interface import (
    ColumnDrift,
    ColumnKind,
    ColumnReference,
    PredictionDrift,
    Quality,
    Reference,
    ServiceHealth,
    SloCheck,
    Task,
)
from ci_ml.monitor.logs import Record
from ci_ml.monitor.policy import MonitorPolicy
from ci_ml.monitor.sketch import (
    CategoryCounts,
    FeatureCounts,
    LatencyCounts,
    NumberCounts,
    category_key,
)

MISSING_BIN = "<missing>"


def _flatten(row: Sequence[Any]) -> list[Any]:
    out: list[Any] = []
    for v in row:
        if isinstance(v, list):
            out.extend(_flatten(v))
        else:
            out.append(v)
    return out


def _label(output: Any) -> str | None:
    if isinstance(output, dict):
        for key in ("label", "class", "prediction", "predicted"):
            if key in output:
                return category_key(output[key])
        return None
    if isinstance(output, list):
        return None
    return category_key(output)


def _value(output: Any) -> float | None:
    if isinstance(output, dict):
        output = output.get("value", output.get("prediction"))
    if isinstance(output, int | float) and not isinstance(output, bool) and math.isfinite(output):
        return float(output)
    return None


class WindowStats:
    """Accumulates a window; ``add`` takes one log record."""

    def __init__(self, reference: Reference, labels: Mapping[tuple[str, int], str] | None = None
                 ) -> None:
        self.reference = reference
        self.order = reference.feature_order or tuple(c.name for c in reference.columns)
        self.features = FeatureCounts(reference.columns)
        self.labels = labels or {}
        self.predicted: Counter[str] = Counter()
        preds = reference.predictions
        self.values = (NumberCounts(preds.values) if preds is not None and preds.values
                       is not None else None)
        self.latency = LatencyCounts()
        self.requests = 0
        self.errors = 0          # 5xx: the service's fault
        self.failed = 0          # any non-2xx
        self.bad_rows = 0
        self.correct = 0
        self.matched = 0
        self._abs_sum = 0.0
        self._abs_sq = 0.0

    def add(self, record: Record) -> None:
        self.requests += 1
        if record.latency_ms is not None:
            self.latency.add(record.latency_ms)
        if not 200 <= record.status < 300:
            self.failed += 1
            self.errors += record.status >= 500
            return
        width = len(self.order)
        for i, (row, output) in enumerate(zip(record.inputs, record.outputs, strict=False)):
            if (self.features.all_numeric and isinstance(row, list) and width and len(row) == width
                    and not isinstance(row[0], list)):
                self.features.add_positional(row)      # the fast path: a flat row of numbers
            else:
                named = self._named(row)
                if named is None:
                    self.bad_rows += 1
                    continue
                self.features.add(named)
            self._prediction(record.id, i, output)

    def _named(self, row: Any) -> Mapping[str, Any] | None:
        if isinstance(row, dict):
            return row
        if isinstance(row, list):
            flat = _flatten(row)
            if len(flat) == len(self.order):
                return dict(zip(self.order, flat, strict=True))
        return None

    def _prediction(self, rid: str, index: int, output: Any) -> None:
        truth = self.labels.get((rid, index)) if self.labels else None
        if self.reference.task is Task.REGRESSION:
            value = _value(output)
            if value is None:
                return
            if self.values is not None:
                self.values.add_block(np.asarray([value]))
            if truth is not None:
                try:
                    err = abs(float(truth) - value)
                except ValueError:
                    return
                if math.isfinite(err):
                    self.matched += 1
                    self._abs_sum += err
                    self._abs_sq += err * err
            return
        label = _label(output)
        if label is None:
            return
        self.predicted[label] += 1
        if truth is not None:
            self.matched += 1
            self.correct += truth == label

    def finish(self) -> None:
        self.features.flush()
        self.latency.flush()

    @property
    def rows(self) -> int:
        return self.features.rows


# -------------------------------------------------------------------- tests

def _numeric_drift(ref: ColumnReference, win: NumberCounts) -> tuple[ColumnDrift, float]:
    assert ref.histogram is not None
    ref_counts = np.asarray(ref.histogram.counts)
    d = stats.ks_binned(ref_counts, win.counts)
    p = stats.ks_p_value(d, ref.count, win.n) if win.n else 1.0
    groups = stats.decile_groups(ref_counts)
    ref_g = np.append(stats.regroup(ref_counts, groups), ref.missing)
    win_g = np.append(stats.regroup(win.counts, groups), win.missing)
    psi = stats.psi(ref_g, win_g) if win.n + win.missing else 0.0
    labels = _group_labels(ref.histogram.edges, groups)
    seen = win.n + win.invalid
    total = win.n + win.missing + win.invalid
    new = win.out_of_range + win.invalid
    unseen_p = stats.binomial_upper_p(new, seen, stats.new_value_rate((), ref.count, True))
    drift = ColumnDrift(
        ref.name, ColumnKind.NUMBER, "ks", d, p, p, psi, win.n,
        missing_share=win.missing / total if total else 0.0,
        reference_missing_share=ref.missing / max(ref.count + ref.missing, 1),
        unseen_share=new / seen if seen else 0.0, unseen_p=unseen_p,
        window_mean=win.mean, reference_mean=ref.mean,
        bins=(*labels, MISSING_BIN), reference_shares=tuple(stats.shares(ref_g)),
        window_shares=tuple(stats.shares(win_g)))
    return drift, p


def _group_labels(edges: Sequence[float], groups: np.ndarray) -> list[str]:
    """Readable labels of the PSI groups: bin ``i`` is ``(edges[i-1], edges[i]]``, bin 0
    lies below the training minimum (``edges[1]``), the last bin above the maximum."""
    if len(edges) < 2:
        return ["all"] * (int(groups.max()) + 1 if len(groups) else 0)
    labels = []
    for g in range(int(groups.max()) + 1):
        bins = np.flatnonzero(groups == g)
        lo, hi = int(bins.min()), int(bins.max())
        if hi == 0:
            labels.append(f"< {edges[1]:g}")
        elif lo == len(edges):
            labels.append(f"> {edges[-1]:g}")
        elif lo == 1:
            labels.append(f"[{edges[1]:g}, {edges[hi]:g}]")
        else:
            labels.append(f"({edges[lo - 1]:g}, {edges[hi]:g}]")
    return labels


def _category_drift(ref: ColumnReference, win: CategoryCounts) -> tuple[ColumnDrift, float]:
    keys = list(ref.categories) + sorted(k for k in win.counts if k not in ref.categories)
    ref_v = np.asarray([ref.categories.get(k, 0) for k in keys] + [ref.missing], dtype=float)
    win_v = np.asarray([win.counts.get(k, 0) for k in keys] + [win.missing], dtype=float)
    stat, p, _ = stats.chi2_homogeneity(ref_v[:-1], win_v[:-1]) if win.n else (0.0, 1.0, 0)
    psi = stats.psi(ref_v, win_v) if win.n + win.missing else 0.0
    total = win.n + win.missing
    unseen_p = stats.binomial_upper_p(win.unseen, win.n, stats.new_value_rate(
        list(ref.categories.values()), ref.count, False)) if ref.complete else 1.0
    drift = ColumnDrift(
        ref.name, ColumnKind.CATEGORY, "chi2", stat, p, p, psi, win.n,
        missing_share=win.missing / total if total else 0.0,
        reference_missing_share=ref.missing / max(ref.count + ref.missing, 1),
        unseen_share=win.unseen / win.n if win.n else 0.0, unseen_p=unseen_p,
        unseen_examples=win.unseen_examples(),
        bins=(*keys, MISSING_BIN), reference_shares=tuple(stats.shares(ref_v)),
        window_shares=tuple(stats.shares(win_v)))
    return drift, p


def feature_drift(window: WindowStats, policy: MonitorPolicy) -> tuple[ColumnDrift, ...]:
    results: list[tuple[ColumnDrift, float]] = []
    for ref in window.reference.columns:
        if ref.kind is ColumnKind.NUMBER and ref.histogram is not None:
            results.append(_numeric_drift(ref, window.features.numbers[ref.name]))
        elif ref.kind is ColumnKind.CATEGORY:
            results.append(_category_drift(ref, window.features.categories[ref.name]))
    adjusted = stats.adjust([p for _, p in results], policy.correction)
    unseen_adjusted = stats.adjust([d.unseen_p for d, _ in results], policy.correction)
    out = []
    for (drift, _), p_adj, u_adj in zip(results, adjusted, unseen_adjusted, strict=True):
        drifted = drift.rows > 0 and p_adj < policy.alpha and drift.psi >= policy.psi
        unseen = u_adj < policy.alpha and drift.unseen_share > policy.max_unseen_share
        out.append(_replace(drift, p_adjusted=p_adj, drifted=drifted, unseen_p=u_adj,
                            unseen=unseen))
    return tuple(out)


def _replace(drift: ColumnDrift, **changes: Any) -> ColumnDrift:
    from dataclasses import replace

    return replace(drift, **changes)


def prediction_drift(window: WindowStats, policy: MonitorPolicy) -> PredictionDrift | None:
    ref = window.reference.predictions
    if ref is None:
        return None
    if ref.task is Task.REGRESSION:
        if ref.values is None or window.values is None or not window.values.n:
            return None
        r, w = np.asarray(ref.values.counts), window.values.counts
        d = stats.ks_binned(r, w)
        p = stats.ks_p_value(d, int(r.sum()), window.values.n)
        groups = stats.decile_groups(r)
        psi = stats.psi(stats.regroup(r, groups), stats.regroup(w, groups))
        return PredictionDrift(Task.REGRESSION, "ks", d, p, psi, window.values.n,
                               p < policy.alpha and psi >= policy.prediction_psi, ref.source)
    n = sum(window.predicted.values())
    if not n or not ref.classes:
        return None
    keys = list(ref.classes) + sorted(k for k in window.predicted if k not in ref.classes)
    r_v = np.asarray([ref.classes.get(k, 0) for k in keys], dtype=float)
    w_v = np.asarray([window.predicted.get(k, 0) for k in keys], dtype=float)
    stat, p, _ = stats.chi2_homogeneity(r_v, w_v)
    psi = stats.psi(r_v, w_v)
    return PredictionDrift(Task.CLASSIFICATION, "chi2", stat, p, psi, n,
                           p < policy.alpha and psi >= policy.prediction_psi, ref.source,
                           bins=tuple(keys), reference_shares=tuple(stats.shares(r_v)),
                           window_shares=tuple(stats.shares(w_v)))


def quality(window: WindowStats, policy: MonitorPolicy) -> Quality | None:
    if not window.matched:
        return None
    n = window.matched
    metrics = window.reference.metrics
    if window.reference.task is Task.REGRESSION:
        mae = window._abs_sum / n
        var = (window._abs_sq - window._abs_sum ** 2 / n) / (n - 1) if n > 1 else math.nan
        ref_mae = metrics.get("mae")
        p = (stats.mean_above_p(mae, math.sqrt(max(var, 0.0)), n, ref_mae)
             if ref_mae is not None else None)
        degraded = (ref_mae is not None and p is not None and n >= policy.min_labels
                    and p < policy.alpha and mae > ref_mae * (1 + policy.max_error_increase))
        return Quality("mae", mae, ref_mae, n, p, degraded)
    acc = window.correct / n
    ref_acc = metrics.get("accuracy")
    p = stats.binomial_lower_p(window.correct, n, ref_acc) if ref_acc is not None else None
    degraded = (ref_acc is not None and p is not None and n >= policy.min_labels
                and p < policy.alpha and ref_acc - acc >= policy.max_accuracy_drop)
    return Quality("accuracy", acc, ref_acc, n, p, degraded)


def log_health(window: WindowStats, policy: MonitorPolicy) -> ServiceHealth:
    """SLO figures from the sampled request log (used when no Prometheus is configured)."""
    checks = []
    enough = window.requests >= policy.min_requests
    if policy.error_rate is not None:
        rate = window.errors / window.requests if window.requests else None
        checks.append(SloCheck("error_rate", rate, policy.error_rate, "",
                               enough and rate is not None and rate > policy.error_rate))
    for slo in policy.latency:
        value = window.latency.quantile(slo.quantile) if window.latency.n else None
        checks.append(SloCheck(slo.name, value, slo.max_ms, "ms",
                               enough and value is not None and value > slo.max_ms))
    note = "" if enough else (f"{window.requests} logged requests, fewer than "
                              f"slo.min_requests ({policy.min_requests}): not judged")
    return ServiceHealth("request log (sampled)", float(window.requests), tuple(checks), note)


@dataclass(frozen=True)
class Analysis:
    features: tuple[ColumnDrift, ...]
    predictions: PredictionDrift | None
    quality: Quality | None
    log_health: ServiceHealth


def analyze(window: WindowStats, policy: MonitorPolicy) -> Analysis:
    window.finish()
    return Analysis(feature_drift(window, policy), prediction_drift(window, policy),
                    quality(window, policy), log_health(window, policy))


def consume(window: WindowStats, records: Iterable[Record]) -> WindowStats:
    for record in records:
        window.add(record)
    return window
