"""The statistics, on counts: PSI, two-sample KS on shared bins, chi-square, corrections.

Everything here works on binned counts rather than raw values, so a window of any
size costs the same memory: the reference fixes the bins (every distinct training
value when there are few, else fine quantiles), the window only counts into them.
For data with few distinct values (pixels 0-16, integer codes) the binned KS
statistic equals the exact one; with quantile bins it is at most one bin's mass
(under 1 %) below it, which errs toward fewer alarms.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

PSI_FLOOR = 1e-4        # share given to an empty bin, so log ratios stay finite
PSI_GROUPS = 10         # PSI's classic decile groups


class Correction(enum.Enum):
    """How per-feature p-values are adjusted for testing many features at once.

    Holm (the default) controls the family-wise error rate under any dependence
    between features: "is any feature drifted" is a family-wise question, and
    features are correlated (neighbouring pixels, derived columns), which the
    Benjamini-Hochberg procedure's FDR guarantee does not cover in general. Holm
    is uniformly more powerful than Bonferroni at the same guarantee.
    """

    HOLM = "holm"
    BONFERRONI = "bonferroni"
    BH = "bh"       # Benjamini-Hochberg: controls the false discovery rate instead
    NONE = "none"


def adjust(p_values: Sequence[float], method: Correction) -> list[float]:
    """Adjusted p-values, in the input's order."""
    m = len(p_values)
    if m == 0 or method is Correction.NONE:
        return list(p_values)
    p = np.asarray(p_values, dtype=float)
    if method is Correction.BONFERRONI:
        return list(np.minimum(1.0, p * m))
    order = np.argsort(p, kind="stable")
    ranked = p[order]
    if method is Correction.HOLM:
        steps = np.maximum.accumulate((m - np.arange(m)) * ranked)
    else:  # BH: step-up from the largest p-value
        scaled = ranked * m / np.arange(1, m + 1)
        steps = np.minimum.accumulate(scaled[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(1.0, steps)
    return [float(v) for v in out]


def shares(counts: npt.ArrayLike) -> np.ndarray:
    arr = np.asarray(counts, dtype=float)
    total = arr.sum()
    return arr / total if total > 0 else np.zeros_like(arr)


def psi(reference: npt.ArrayLike, window: npt.ArrayLike) -> float:
    """Population stability index between two count vectors on the same bins."""
    e = np.clip(shares(reference), PSI_FLOOR, None)
    a = np.clip(shares(window), PSI_FLOOR, None)
    return float(np.sum((a - e) * np.log(a / e)))


def decile_groups(reference: npt.ArrayLike) -> np.ndarray:
    """A PSI group for each fine bin: the first and last bins (outside the training range)
    alone, the rest merged into about ten groups of equal reference mass."""
    ref = np.asarray(reference, dtype=float)
    n = len(ref)
    groups = np.zeros(n, dtype=int)
    if n <= 2:
        return np.arange(n)
    inner = ref[1:-1]
    total = inner.sum()
    if total > 0:
        before = (np.cumsum(inner) - inner) / total
        inner_groups = np.minimum((before * PSI_GROUPS).astype(int), PSI_GROUPS - 1)
    else:
        inner_groups = np.zeros(len(inner), dtype=int)
    # Renumber densely: a point mass that spans several deciles is one group.
    _, dense = np.unique(inner_groups, return_inverse=True)
    groups[1:-1] = dense + 1
    groups[-1] = dense.max() + 2 if len(dense) else 1
    return groups


def regroup(counts: npt.ArrayLike, groups: np.ndarray) -> np.ndarray:
    return np.bincount(groups, weights=np.asarray(counts, dtype=float),
                       minlength=int(groups.max()) + 1)


def ks_binned(reference: npt.ArrayLike, window: npt.ArrayLike) -> float:
    """Two-sample Kolmogorov-Smirnov statistic D on shared ordered bins."""
    r, w = shares(reference), shares(window)
    return float(np.max(np.abs(np.cumsum(r) - np.cumsum(w)))) if len(r) else 0.0


def ks_p_value(d: float, n: int, m: int) -> float:
    """Asymptotic two-sample p-value (as scipy's ks_2samp in 'asymp' mode)."""
    if n == 0 or m == 0:
        return 1.0
    from scipy.stats import kstwo

    en = n * m / (n + m)
    return float(kstwo.sf(d, max(1, round(en))))


def chi2_homogeneity(reference: npt.ArrayLike, window: npt.ArrayLike,
                     min_expected: float = 5.0) -> tuple[float, float, int]:
    """Chi-square test that two count vectors come from one distribution.

    Categories whose expected window count is under ``min_expected`` are pooled (the
    test's approximation needs it); categories empty in both are dropped. Returns
    (statistic, p-value, degrees of freedom).
    """
    from scipy.stats import chi2

    ref = np.asarray(reference, dtype=float)
    win = np.asarray(window, dtype=float)
    keep = (ref + win) > 0
    ref, win = ref[keep], win[keep]
    n_ref, n_win = ref.sum(), win.sum()
    if n_ref == 0 or n_win == 0 or len(ref) < 2:
        return 0.0, 1.0, 0
    total = n_ref + n_win
    expected_win = (ref + win) * n_win / total
    small = expected_win < min_expected
    if small.any() and (~small).any():
        ref = np.append(ref[~small], ref[small].sum())
        win = np.append(win[~small], win[small].sum())
    if len(ref) < 2:
        return 0.0, 1.0, 0
    table = np.vstack([ref, win])
    expected = table.sum(axis=0, keepdims=True) * table.sum(axis=1, keepdims=True) / total
    stat = float(np.sum((table - expected) ** 2 / expected))
    dof = len(ref) - 1
    return stat, float(chi2.sf(stat, dof)), dof


def binomial_lower_p(successes: int, trials: int, p0: float) -> float:
    """One-sided p-value that the success rate is below ``p0`` (exact binomial)."""
    if trials == 0:
        return 1.0
    from scipy.stats import binom

    return float(binom.cdf(successes, trials, min(max(p0, 0.0), 1.0)))


def binomial_upper_p(successes: int, trials: int, p0: float) -> float:
    """One-sided p-value that the success rate is above ``p0`` (exact binomial)."""
    if trials == 0 or successes == 0:
        return 1.0
    from scipy.stats import binom

    return float(binom.sf(successes - 1, trials, min(max(p0, 0.0), 1.0)))


def new_value_rate(counts: npt.ArrayLike, total: int, numeric: bool) -> float:
    """How often a value never seen in ``total`` training values turns up without drift.

    Numbers: a new sample exceeds the maximum (or falls below the minimum) of ``total``
    exchangeable ones with probability 1/(total+1) each. Categories: the Good-Turing
    estimate of unseen mass, the share of categories seen exactly once (at least one).
    """
    if numeric:
        return 2.0 / (total + 1)
    singletons = int(np.sum(np.asarray(counts) == 1))
    return max(singletons, 1) / (total + 1)


def mean_above_p(mean: float, std: float, n: int, mu0: float) -> float:
    """One-sided p-value that a mean (of ``n`` values with this std) exceeds ``mu0``."""
    if n < 2 or not math.isfinite(std):
        return 1.0
    from scipy.stats import t

    if std <= 0:
        return 0.0 if mean > mu0 else 1.0
    return float(t.sf((mean - mu0) / (std / math.sqrt(n)), n - 1))
