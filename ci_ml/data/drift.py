"""Drift statistics: PSI for numbers, the chi-square test (with Cramer's V) for categories.

The chi-square p-value comes from the regularized upper incomplete gamma function
(series and continued fraction, as in Numerical Recipes §6.2): no scipy at run time;
the tests compare it with ``scipy.stats.chi2.sf``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

_EPS = 1e-15
_ITERATIONS = 500


def _gamma_series(a: float, x: float) -> float:
    """Regularized lower incomplete gamma P(a, x), series (x < a + 1)."""
    term = total = 1.0 / a
    ap = a
    for _ in range(_ITERATIONS):
        ap += 1.0
        term *= x / ap
        total += term
        if abs(term) < abs(total) * _EPS:
            break
    return total * math.exp(-x + a * math.log(x) - math.lgamma(a))


def _gamma_fraction(a: float, x: float) -> float:
    """Regularized upper incomplete gamma Q(a, x), Lentz's continued fraction (x >= a + 1)."""
    tiny = 1e-300
    b = x + 1.0 - a
    c = 1.0 / tiny
    d = 1.0 / b
    h = d
    for i in range(1, _ITERATIONS):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _EPS:
            break
    return math.exp(-x + a * math.log(x) - math.lgamma(a)) * h


def chi2_sf(statistic: float, dof: int) -> float:
    """P(X >= statistic) for X ~ chi-square with ``dof`` degrees of freedom."""
    if dof <= 0 or statistic <= 0:
        return 1.0
    if not math.isfinite(statistic):
        return 0.0
    a, x = dof / 2.0, statistic / 2.0
    if x < a + 1.0:
        return max(0.0, min(1.0, 1.0 - _gamma_series(a, x)))
    return max(0.0, min(1.0, _gamma_fraction(a, x)))


@dataclass(frozen=True)
class CategoryDrift:
    statistic: float
    dof: int
    p_value: float
    cramers_v: float


def category_drift(expected: Mapping[str, int], actual: Mapping[str, int]) -> CategoryDrift:
    """Chi-square test of homogeneity between two samples' category counts (2 x k table).

    Categories only one side has count too (a new category is drift). Cramer's V =
    sqrt(chi2 / n) for a two-row table: 0 same distribution, 1 disjoint.
    """
    cats = sorted(set(expected) | set(actual))
    if len(cats) < 2:
        return CategoryDrift(0.0, 0, 1.0, 0.0)
    table = np.array([[expected.get(c, 0) for c in cats], [actual.get(c, 0) for c in cats]],
                     dtype=np.float64)
    n = table.sum()
    rows, cols = table.sum(axis=1, keepdims=True), table.sum(axis=0, keepdims=True)
    if n == 0 or (rows == 0).any():
        return CategoryDrift(0.0, 0, 1.0, 0.0)
    keep = cols[0] > 0
    table, cols = table[:, keep], cols[:, keep]
    exp = rows * cols / n
    stat = float(((table - exp) ** 2 / exp).sum())
    dof = table.shape[1] - 1
    return CategoryDrift(stat, dof, chi2_sf(stat, dof), math.sqrt(stat / n) if n else 0.0)


def psi_from_shares(expected: Sequence[float] | np.ndarray,
                    actual: Sequence[float] | np.ndarray) -> float:
    """Population stability index from two sets of bin shares."""
    e = np.clip(np.asarray(expected, dtype=np.float64), 1e-4, None)
    a = np.clip(np.asarray(actual, dtype=np.float64), 1e-4, None)
    return float(np.sum((a - e) * np.log(a / e)))


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
    return psi_from_shares(e, a)


def psi_edges(sample: np.ndarray, actual_size: int, bins: int = 10) -> np.ndarray:
    """Inner quantile edges of the expected sample, fewer bins for a small actual sample."""
    bins = max(2, min(bins, actual_size // 20))
    return np.unique(np.quantile(sample, np.linspace(0, 1, bins + 1))[1:-1])
