"""Streaming accumulators: a window of any length in memory bounded by the reference.

Numbers are counted into the reference's bins (buffered and counted with numpy in
blocks), categories into a counter whose never-seen entries are capped, latencies
into fixed log-spaced bins. Nothing keeps a row once it is counted.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from ci_ml.monitor.interface import ColumnKind, ColumnReference, Histogram

BLOCK_ROWS = 4096
MAX_UNSEEN_CATEGORIES = 1000          # distinct never-seen values kept by name per column
OTHER_UNSEEN = "<other unseen values>"
MISSING_STRINGS = frozenset({"", "na", "nan", "null", "none", "n/a"})


def category_key(value: Any) -> str | None:
    """The canonical string of a categorical value; None when it is missing.

    JSON ``1`` and ``1.0`` and CSV ``"1"`` are one category.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if value.is_integer():
            return str(int(value))
        return repr(value)
    text = str(value).strip()
    return None if text.lower() in MISSING_STRINGS else text


def number_or_nan(value: Any) -> tuple[float, bool]:
    """(value, valid): missing values are NaN and valid; strings that are not numbers and
    containers are invalid (JSON true and false are 1 and 0, as numpy converts them)."""
    if value is None:
        return math.nan, True
    if not isinstance(value, int | float | str):
        return math.nan, False
    if isinstance(value, str):
        if value.strip().lower() in MISSING_STRINGS:
            return math.nan, True
        try:
            number = float(value)
        except ValueError:
            return math.nan, False
    else:
        number = float(value)
    if math.isinf(number):
        return math.nan, False
    return number, True


class NumberCounts:
    """Counts of one numeric column on a reference histogram's bins."""

    def __init__(self, histogram: Histogram) -> None:
        self.edges = np.asarray(histogram.edges, dtype=float)
        self.counts = np.zeros(len(self.edges) + 1, dtype=np.int64)
        self.nan = 0            # missing and invalid values alike are NaN in a block
        self.invalid = 0
        self.n = 0
        self.total = 0.0
        self.total_sq = 0.0

    def add_block(self, values: np.ndarray) -> None:
        present = values[~np.isnan(values)]
        self.nan += int(values.size - present.size)
        if present.size:
            index = np.searchsorted(self.edges, present, side="left")
            self.counts += np.bincount(index, minlength=self.counts.size)
            self.n += int(present.size)
            self.total += float(present.sum())
            self.total_sq += float(np.square(present).sum())

    @property
    def missing(self) -> int:
        return self.nan - self.invalid

    @property
    def mean(self) -> float | None:
        return self.total / self.n if self.n else None

    @property
    def std(self) -> float | None:
        if self.n < 2:
            return None
        var = (self.total_sq - self.total ** 2 / self.n) / (self.n - 1)
        return math.sqrt(max(var, 0.0))

    @property
    def out_of_range(self) -> int:
        """Values below the training minimum or above its maximum."""
        return int(self.counts[0] + self.counts[-1])


class CategoryCounts:
    """Counts of one categorical column; never-seen values are capped by name."""

    def __init__(self, known: Iterable[str]) -> None:
        self.known = frozenset(known)
        self.counts: Counter[str] = Counter()
        self.missing = 0
        self._unseen_names = 0

    def add(self, value: Any) -> None:
        key = category_key(value)
        if key is None:
            self.missing += 1
            return
        if key not in self.known and key not in self.counts:
            if self._unseen_names >= MAX_UNSEEN_CATEGORIES:
                key = OTHER_UNSEEN
            else:
                self._unseen_names += 1
        self.counts[key] += 1

    @property
    def n(self) -> int:
        return sum(self.counts.values())

    @property
    def unseen(self) -> int:
        return sum(v for k, v in self.counts.items() if k not in self.known)

    def unseen_examples(self, limit: int = 5) -> tuple[str, ...]:
        ranked = sorted(((v, k) for k, v in self.counts.items() if k not in self.known),
                        key=lambda item: (-item[0], item[1]))
        return tuple(k for _, k in ranked[:limit])


class FeatureCounts:
    """Every feature of the window: numbers buffered into blocks, categories counted.

    Rows by name go through ``add``. Flat positional rows of an all-numeric model (the
    common case: a list of numbers per row) go through ``add_positional``, which keeps the
    row as it came and lets numpy convert a whole block at once; a block holding anything
    but numbers and nulls is converted value by value instead, with the same result.
    """

    def __init__(self, columns: Sequence[ColumnReference]) -> None:
        self.columns = tuple(columns)
        self.numeric = [c for c in self.columns if c.kind is ColumnKind.NUMBER]
        self.numbers = {c.name: NumberCounts(c.histogram or Histogram((), (0,)))
                        for c in self.numeric}
        self.categories = {c.name: CategoryCounts(c.categories) for c in self.columns
                           if c.kind is ColumnKind.CATEGORY}
        self._position = {c.name: i for i, c in enumerate(self.numeric)}
        self.all_numeric = not self.categories
        self._block: list[list[float]] = []
        self._raw: list[list[Any]] = []
        self.rows = 0

    def add(self, row: Mapping[str, Any]) -> None:
        """One row by column name; absent columns count as missing."""
        for name, counts in self.categories.items():
            counts.add(row.get(name))
        self._block.append(self._parse([row.get(name) for name in self._position]))
        self.rows += 1
        if len(self._block) >= BLOCK_ROWS:
            self.flush()

    def add_positional(self, row: list[Any]) -> None:
        """One flat row in column order, for an all-numeric reference."""
        self._raw.append(row)
        self.rows += 1
        if len(self._raw) >= BLOCK_ROWS:
            self.flush()

    def _parse(self, values: Sequence[Any]) -> list[float]:
        out = []
        for name, value in zip(self._position, values, strict=True):
            number, valid = number_or_nan(value)
            if not valid:
                self.numbers[name].invalid += 1
            out.append(number)
        return out

    def _raw_block(self) -> np.ndarray:
        raw, self._raw = self._raw, []
        try:
            block = np.asarray(raw, dtype=float)    # None becomes NaN: missing
        except (ValueError, TypeError):
            return np.asarray([self._parse(r) for r in raw], dtype=float)
        if block.shape != (len(raw), len(self.numeric)):
            return np.asarray([self._parse(r) for r in raw], dtype=float)
        infinite = np.isinf(block)
        if infinite.any():
            for i, name in enumerate(self._position):
                self.numbers[name].invalid += int(infinite[:, i].sum())
            block[infinite] = np.nan
        return block

    def flush(self) -> None:
        blocks = []
        if self._raw:
            blocks.append(self._raw_block())
        if self._block:
            blocks.append(np.asarray(self._block, dtype=float).reshape(len(self._block),
                                                                      len(self.numeric)))
            self._block = []
        for block in blocks:
            for c, i in self._position.items():
                self.numbers[c].add_block(block[:, i])


class LatencyCounts:
    """Latencies on fixed log-spaced bins (1 us .. 1000 s, 2 % wide): quantiles within 2 %."""

    LOW_MS, HIGH_MS, BINS = 1e-3, 1e6, 1050

    def __init__(self) -> None:
        self.edges = np.geomspace(self.LOW_MS, self.HIGH_MS, self.BINS)
        self.counts = np.zeros(self.BINS + 1, dtype=np.int64)
        self._buffer: list[float] = []

    def add(self, ms: float) -> None:
        self._buffer.append(ms)
        if len(self._buffer) >= BLOCK_ROWS:
            self.flush()

    def flush(self) -> None:
        if self._buffer:
            index = np.searchsorted(self.edges, np.asarray(self._buffer), side="left")
            self.counts += np.bincount(index, minlength=self.counts.size)
            self._buffer = []

    @property
    def n(self) -> int:
        self.flush()
        return int(self.counts.sum())

    def quantile(self, q: float) -> float | None:
        self.flush()
        total = int(self.counts.sum())
        if total == 0:
            return None
        rank = q * total
        index = int(np.searchsorted(np.cumsum(self.counts), rank, side="left"))
        index = min(index, self.BINS - 1)
        return float(self.edges[index])
