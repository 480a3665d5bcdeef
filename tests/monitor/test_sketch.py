"""The streaming counters: the positional fast path counts exactly what the named path does."""

from __future__ import annotations

import numpy as np

from ci_ml.monitor.reference import column_reference
from ci_ml.monitor.sketch import BLOCK_ROWS, CategoryCounts, FeatureCounts, LatencyCounts


def _counts(rows: list[list[object]], positional: bool) -> FeatureCounts:
    refs = [column_reference(f"c{i}", [str(v) for v in range(20)]) for i in range(3)]
    counts = FeatureCounts(refs)
    for row in rows:
        if positional:
            counts.add_positional(row)
        else:
            counts.add({f"c{i}": v for i, v in enumerate(row)})
    counts.flush()
    return counts


def test_fast_and_named_paths_agree_on_odd_values() -> None:
    rng = np.random.default_rng(0)
    rows: list[list[object]] = [[int(v) for v in rng.integers(-2, 25, 3)]
                                for _ in range(BLOCK_ROWS + 50)]
    rows[3] = [None, "7", 1.5]                 # missing, a numeric string, a float
    rows[BLOCK_ROWS + 10] = ["seven", 2, 3]     # not a number: that block goes value by value
    rows[7] = [float("inf"), 1, 2]              # not finite: invalid
    fast, named = _counts(rows, True), _counts(rows, False)
    for name in ("c0", "c1", "c2"):
        a, b = fast.numbers[name], named.numbers[name]
        assert a.counts.tolist() == b.counts.tolist()
        assert (a.missing, a.invalid, a.n) == (b.missing, b.invalid, b.n)
    assert fast.numbers["c0"].invalid == 2 and fast.numbers["c0"].missing == 1
    assert fast.numbers["c0"].out_of_range == sum(1 for r in rows if isinstance(r[0], int)
                                                  and not 0 <= r[0] <= 19)


def test_unseen_categories_are_capped_by_name() -> None:
    counts = CategoryCounts(["a", "b"])
    for i in range(1500):
        counts.add(f"new-{i}")
    counts.add("a")
    counts.add(None)
    counts.add("NA")
    assert counts.unseen == 1500 and counts.missing == 2 and counts.n == 1501
    assert len(counts.counts) == 1000 + 1 + 1      # 1000 named, the rest pooled, and "a"


def test_latency_quantiles_within_two_percent() -> None:
    lat = LatencyCounts()
    values = np.random.default_rng(1).lognormal(0, 1, 20000)
    for v in values:
        lat.add(float(v))
    for q in (0.5, 0.9, 0.99):
        exact = float(np.quantile(values, q))
        assert abs(lat.quantile(q) - exact) / exact < 0.02  # type: ignore[operator]
