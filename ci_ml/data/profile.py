"""Streaming column profiles: one pass over record batches, memory bounded per column.

Per column: rows and missing values; for values that parse as numbers, count, range,
sum and sum of squares, whether all are integers, and a seeded reservoir sample (the
quantile sketch); value counts of the raw values up to ``CATEGORY_CAP`` distinct
values (past the cap a column stops counting and remembers how unique it was when it
got there: that is what tells an identifier from a category); how many values look
like ISO dates. Given a reference (the training split's schema), the same pass also
counts what the checks need exactly: values outside the reference range and
categories the reference never saw.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ci_ml.data.rowhash import row_hashes

if TYPE_CHECKING:
    import pyarrow as pa

NUMBER_RE = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$"
DATE_RE = (r"^[0-9]{4}-[0-9]{2}-[0-9]{2}"
           r"([T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?(Z|[+-][0-9]{2}:?[0-9]{2})?)?$")
CATEGORY_CAP = 10_000
RESERVOIR = 8192


@dataclass(frozen=True)
class ColumnReference:
    """What a profile of new data is compared with, per column (from the training split)."""

    kind: str                                   # "number" | "category" | "datetime"
    low: float | None = None
    high: float | None = None
    categories: frozenset[str] = frozenset()


@dataclass(frozen=True)
class ColumnProfile:
    name: str
    rows: int
    missing: int
    numeric_like: int                 # non-missing values that parse as numbers
    date_like: int                    # non-missing values that look like ISO dates
    non_numeric: tuple[str, ...]      # up to 4 distinct values that do not parse as numbers
    count: int                        # numbers seen (numeric_like, or all in a float column)
    low: float | None
    high: float | None
    mean: float | None
    std: float | None
    integral: bool                    # every number is an integer
    sample: tuple[float, ...]         # reservoir sample of the numbers (quantile sketch)
    counts: Mapping[str, int] | None  # raw value counts, None past CATEGORY_CAP
    distinct: int                     # exact, or the cap when counts is None
    unique_ratio: float               # distinct / non-missing (when the cap was hit: then)
    # Against a reference (zeros without one):
    below: int = 0
    above: int = 0
    unseen: int = 0
    unseen_values: Mapping[str, int] = field(default_factory=dict)

    @property
    def present(self) -> int:
        return self.rows - self.missing

    @property
    def missing_share(self) -> float:
        return self.missing / self.rows if self.rows else 0.0

    def quantiles(self, qs: Sequence[float]) -> list[float]:
        if not self.sample:
            return []
        return [float(v) for v in np.quantile(np.asarray(self.sample), qs)]


class ColumnProfiler:
    """Accumulates one column's profile over batches (string or float64 arrays)."""

    def __init__(self, name: str, seed: int, reference: ColumnReference | None = None,
                 cap: int = CATEGORY_CAP) -> None:
        self.name = name
        self.ref = reference
        self.cap = cap
        self.rng = np.random.default_rng(seed)
        self.rows = self.missing = self.numeric_like = self.date_like = 0
        self.non_numeric: dict[str, None] = {}
        self.count = 0
        self.low, self.high = math.inf, -math.inf
        self.total = self.total_sq = 0.0
        self.shift: float | None = None   # sums are taken around the first value (stability)
        self.integral = True
        self.sample = np.empty(0)
        self.keys = np.empty(0)
        self.counts: dict[str, int] | None = {}
        self.ratio_at_cap = 1.0
        self.below = self.above = self.unseen = 0
        self.unseen_values: dict[str, int] = {}

    # -- one batch ---------------------------------------------------------------------
    def update(self, arr: pa.Array) -> None:
        import pyarrow as pa
        import pyarrow.compute as pc

        n = len(arr)
        nulls = arr.null_count
        self.rows += n
        self.missing += nulls
        present = n - nulls
        if present == 0:
            return
        if pa.types.is_floating(arr.type):
            values = arr.drop_null().to_numpy(zero_copy_only=False)
            self.numeric_like += present
            self._numbers(values)
            self._count(arr, present)
            return
        nums_all = _all_numbers(arr)
        if nums_all is not None:  # the common case, without a regex over every value
            self.numeric_like += present
            self._numbers(nums_all)
            self._count(arr, present)
            return
        is_num = pc.match_substring_regex(arr, NUMBER_RE)
        n_num = pc.sum(is_num).as_py() or 0
        self.numeric_like += n_num
        if n_num < present and len(self.non_numeric) < 4:
            others = pc.filter(arr, pc.invert(pc.fill_null(is_num, True)))
            for v in others.unique().to_pylist()[:4]:
                if len(self.non_numeric) < 4:
                    self.non_numeric.setdefault(str(v)[:40], None)
        if n_num:
            nums = pc.cast(pc.filter(arr, pc.fill_null(is_num, False)), pa.float64())
            self._numbers(nums.to_numpy(zero_copy_only=False))
        # All numbers cannot be dates: the regex runs only where it can say something.
        if n_num < present or (self.ref is not None and self.ref.kind == "datetime"):
            self.date_like += pc.sum(pc.match_substring_regex(arr, DATE_RE)).as_py() or 0
        self._count(arr, present)
        if self.ref is not None and self.ref.kind == "category" and self.ref.categories:
            self._unseen(arr, present)

    def _numbers(self, values: np.ndarray) -> None:
        if values.size == 0:
            return
        values = values[np.isfinite(values)]
        if values.size == 0:
            return
        if self.shift is None:
            self.shift = float(values[0])
        # Values near float64's range (1e300 in a broken export) overflow the sums to inf:
        # the mean and std say so; numpy's warning would only be noise on the console.
        with np.errstate(over="ignore", invalid="ignore"):
            centered = values - self.shift
            self.total += float(centered.sum())
            self.total_sq += float(np.dot(centered, centered))
        self.count += values.size
        self.low = min(self.low, float(values.min()))
        self.high = max(self.high, float(values.max()))
        if self.integral and not np.all(np.floor(values) == values):
            self.integral = False
        self._reservoir(values)
        ref = self.ref
        if ref is not None and ref.kind == "number":
            if ref.low is not None:
                self.below += int(np.count_nonzero(values < ref.low))
            if ref.high is not None:
                self.above += int(np.count_nonzero(values > ref.high))

    def _reservoir(self, values: np.ndarray) -> None:
        # Weighted-free reservoir by random priorities: keep the RESERVOIR smallest keys.
        keys = self.rng.random(values.size)
        sample = np.concatenate([self.sample, values])
        allkeys = np.concatenate([self.keys, keys])
        if sample.size > RESERVOIR:
            keep = np.argpartition(allkeys, RESERVOIR - 1)[:RESERVOIR]
            sample, allkeys = sample[keep], allkeys[keep]
        self.sample, self.keys = sample, allkeys

    def _count(self, arr: pa.Array, present: int) -> None:
        if self.counts is None:
            return
        import pyarrow.compute as pc

        counted = pc.value_counts(arr.drop_null())
        if len(counted) + len(self.counts) > 4 * self.cap:
            # Far past the cap in one batch (a key or a continuous number): no merging.
            self.ratio_at_cap = len(counted) / max(present, 1)
            self.counts = None
            return
        vals = counted.field("values").to_pylist()
        ns = counted.field("counts").to_pylist()
        counts = self.counts
        for v, k in zip(vals, ns, strict=True):
            key = _key(v)
            counts[key] = counts.get(key, 0) + k
        if len(counts) > self.cap:
            self.ratio_at_cap = len(counts) / max(self.rows - self.missing, 1)
            self.counts = None

    def _unseen(self, arr: pa.Array, present: int) -> None:
        import pyarrow as pa
        import pyarrow.compute as pc

        assert self.ref is not None
        # A missing value is not a new category (is_in says False for null).
        known = pc.or_(pc.is_in(arr, value_set=pa.array(sorted(self.ref.categories))),
                       pc.is_null(arr))
        new = int(len(arr) - (pc.sum(known).as_py() or 0))
        if new:
            self.unseen += new
            if len(self.unseen_values) < 20:
                counted = pc.value_counts(pc.filter(arr, pc.invert(known)))
                for v, k in zip(counted.field("values").to_pylist(),
                                counted.field("counts").to_pylist(), strict=True):
                    if len(self.unseen_values) < 20 or str(v) in self.unseen_values:
                        key = str(v)[:60]
                        self.unseen_values[key] = self.unseen_values.get(key, 0) + k

    # -- the result ----------------------------------------------------------------------
    def result(self) -> ColumnProfile:
        present = self.rows - self.missing
        mean = std = None
        if self.count:
            m = self.total / self.count
            var = max(self.total_sq / self.count - m * m, 0.0)
            mean, std = m + (self.shift or 0.0), math.sqrt(var)
        counts = dict(self.counts) if self.counts is not None else None
        distinct = len(counts) if counts is not None else self.cap
        ratio = (distinct / present if present else 0.0) if counts is not None \
            else self.ratio_at_cap
        return ColumnProfile(
            name=self.name, rows=self.rows, missing=self.missing,
            numeric_like=self.numeric_like, date_like=self.date_like,
            non_numeric=tuple(self.non_numeric), count=self.count,
            low=self.low if self.count else None, high=self.high if self.count else None,
            mean=mean, std=std, integral=self.integral and self.count > 0,
            sample=tuple(float(v) for v in np.sort(self.sample)),
            counts=counts, distinct=distinct, unique_ratio=min(ratio, 1.0),
            below=self.below, above=self.above, unseen=self.unseen,
            unseen_values=dict(self.unseen_values),
        )


def _all_numbers(arr: pa.Array) -> np.ndarray | None:
    """The present values as float64 if every one of them is a plain decimal number."""
    import pyarrow as pa
    import pyarrow.compute as pc

    present = arr.drop_null()
    try:
        # arrow's failing string-to-number cast costs about 1 us a value (it parses them
        # all): a text column is told by its first values, 20x faster than by the cast.
        pc.cast(present.slice(0, 64), pa.float64())
        values = pc.cast(present, pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    out = values.to_numpy(zero_copy_only=False)
    if not np.isfinite(out).all():
        return None  # "inf"/"nan" words: the regex decides (they are not numbers to us)
    return out


def _key(value: Any) -> str:
    if isinstance(value, float):
        return repr(int(value)) if value.is_integer() else repr(value)
    return str(value)


@dataclass(frozen=True)
class TableProfile:
    path: str
    sha256: str
    rows: int
    columns: Mapping[str, ColumnProfile]
    row_hashes: np.ndarray | None = None   # uint64 per row, when asked for


def profile_batches(batches: Iterable[pa.RecordBatch], columns: Sequence[str], *,
                    seed: int = 0, references: Mapping[str, ColumnReference] | None = None,
                    hash_rows: bool = False, progress: Any = None) -> tuple[
                        dict[str, ColumnProfile], int, np.ndarray | None]:
    """Profile every column of a stream of batches; optionally hash each row (uint64)."""
    refs = references or {}
    profilers = {c: ColumnProfiler(c, seed + i, refs.get(c)) for i, c in enumerate(columns)}
    hashes: list[np.ndarray] = []
    rows = 0
    for batch in batches:
        for name, arr in zip(batch.schema.names, batch.columns, strict=True):
            profilers[name].update(arr)
        if hash_rows:
            hashes.append(row_hashes(batch))
        rows += batch.num_rows
        if progress is not None:
            progress(rows)
    all_hashes = np.concatenate(hashes) if hashes else (np.empty(0, np.uint64) if hash_rows
                                                        else None)
    return {c: p.result() for c, p in profilers.items()}, rows, all_hashes
