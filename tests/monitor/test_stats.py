"""The statistics against scipy's reference implementations and hand-worked cases."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from ci_ml.monitor import stats
from ci_ml.monitor.reference import numeric_histogram
from ci_ml.monitor.sketch import NumberCounts


def _binned(ref: np.ndarray, win: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    hist = numeric_histogram(ref)
    counts = NumberCounts(hist)
    counts.add_block(win)
    return np.asarray(hist.counts), counts.counts


def test_binned_ks_equals_scipy_on_discrete_data() -> None:
    rng = np.random.default_rng(1)
    ref = rng.integers(0, 17, 1400).astype(float)
    win = np.clip(rng.integers(0, 17, 300) + rng.integers(0, 3, 300), 0, 20).astype(float)
    r, w = _binned(ref, win)
    assert stats.ks_binned(r, w) == pytest.approx(sps.ks_2samp(ref, win).statistic, abs=1e-12)


def test_binned_ks_is_within_one_bin_of_scipy_on_continuous_data() -> None:
    rng = np.random.default_rng(2)
    ref, win = rng.normal(size=5000), rng.normal(0.2, 1.1, size=800)
    r, w = _binned(ref, win)
    exact = sps.ks_2samp(ref, win).statistic
    assert exact - 0.011 <= stats.ks_binned(r, w) <= exact + 1e-12
    p = stats.ks_p_value(stats.ks_binned(r, w), 5000, 800)
    assert p < 1e-6 and p == pytest.approx(sps.ks_2samp(ref, win, method="asymp").pvalue,
                                           rel=0.5)


def test_chi_square_equals_scipy_contingency() -> None:
    ref, win = np.array([120, 80, 40, 10]), np.array([30, 30, 25, 15])
    stat, p, dof = stats.chi2_homogeneity(ref, win)
    expected = sps.chi2_contingency(np.vstack([ref, win]), correction=False)
    assert (stat, p, dof) == pytest.approx((expected.statistic, expected.pvalue, expected.dof))


def test_chi_square_pools_sparse_categories() -> None:
    stat, p, dof = stats.chi2_homogeneity([500, 300, 2, 1], [50, 30, 0, 1])
    assert dof == 2 and 0 <= p <= 1


def test_holm_bonferroni_and_bh_by_hand() -> None:
    p = [0.01, 0.04, 0.03, 0.005]
    assert stats.adjust(p, stats.Correction.HOLM) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.adjust(p, stats.Correction.BONFERRONI) == pytest.approx([0.04, 0.16, 0.12, 0.02])
    assert stats.adjust(p, stats.Correction.BH) == pytest.approx([0.02, 0.04, 0.04, 0.02])
    assert stats.adjust(p, stats.Correction.NONE) == p


def test_psi_is_zero_on_equal_shares_and_grows_with_shift() -> None:
    assert stats.psi([10, 20, 30], [1, 2, 3]) == pytest.approx(0.0)
    small = stats.psi([25, 25, 25, 25], [30, 25, 25, 20])
    large = stats.psi([25, 25, 25, 25], [55, 25, 15, 5])
    assert 0 < small < 0.1 < 0.2 < large


def test_decile_groups_keep_out_of_range_bins_apart() -> None:
    hist = numeric_histogram(np.arange(1000, dtype=float))
    groups = stats.decile_groups(hist.counts)
    assert groups[0] == 0 and groups[-1] == groups.max()
    assert len(set(groups[1:-1])) == 10 and groups[-1] not in set(groups[1:-1])


def test_new_value_rates() -> None:
    assert stats.new_value_rate((), 999, numeric=True) == pytest.approx(0.002)
    assert stats.new_value_rate([5, 1, 1, 7], 14, numeric=False) == pytest.approx(2 / 15)
    # 10 values above a max that 1000 exchangeable training values set: not by chance.
    assert stats.binomial_upper_p(10, 100, 0.002) < 1e-9
    assert stats.binomial_upper_p(0, 100, 0.002) == 1.0
