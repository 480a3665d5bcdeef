"""Row hashes for the duplicate and train/test overlap checks, in bounded memory.

Each row becomes one 64-bit hash of its values (``row_hashes``, vectorized over the
batch's arrow buffers). A ``RowHashSet`` collects a split's hashes partitioned by
hash into ``BUCKETS`` buckets; past ``MEMORY_ROWS`` hashes held in memory it appends
every bucket to its own file in a private temporary directory, so memory stays about
``MEMORY_ROWS`` x 8 bytes whatever the number of rows (disk: 8 bytes a row). The
answers are then computed one bucket at a time: equal hashes always share a bucket,
so per-bucket counts add up to exact totals, with one bucket (about rows / BUCKETS
hashes) in memory at a time. A set that never spills is answered in memory.

Each flush of the training split's hashes writes one copy of each hash (a file of a
million copies of one row costs a hash per flush, not a million); the counts are
exact either way.

Which bucket a hash falls in is keyed by a random per-run salt: a data file crafted
so that its rows collide in one bucket cannot choose that bucket. Collisions of the
64-bit hash itself can only merge distinct rows (more duplicates, more overlap),
never hide a repeated row: equal rows always hash equal.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pyarrow as pa

# 1M hashes (8 MB) in memory before spilling: files under about 100 MB never touch disk.
MEMORY_ROWS = 1 << 20
BUCKETS = 256

_MIX = np.uint64(0x9E3779B97F4A7C15)
_POWERS = np.ones(1, dtype=np.uint64)


def _powers(n: int) -> np.ndarray:
    """1, M, M^2, ... (mod 2^64: uint64 products wrap) for byte positions within a string."""
    global _POWERS
    if _POWERS.size < n:
        with np.errstate(over="ignore"):
            _POWERS = np.concatenate([np.ones(1, dtype=np.uint64),
                                      np.cumprod(np.full(n - 1, _MIX, dtype=np.uint64))])
    return _POWERS[:n]


def _string_hashes(arr: pa.Array) -> np.ndarray:
    """A stable 64-bit hash per string value (null -> a fixed value), vectorized over the
    array's own buffers: sum of byte * M^position, mixed with the length."""
    import pyarrow as pa

    arr = arr.cast(pa.string()) if not pa.types.is_string(arr.type) else arr
    n = len(arr)
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32, count=n + 1 + arr.offset)[
        arr.offset:]
    data_buf = arr.buffers()[2]
    data = (np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None
            else np.empty(0, np.uint8))
    start, stop = int(offsets[0]), int(offsets[-1])
    lengths = np.diff(offsets).astype(np.int64)
    out = lengths.astype(np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F)
    if stop > start:
        owner = np.repeat(np.arange(n), lengths)
        position = np.arange(stop - start) - (offsets[:-1] - start).astype(np.int64)[owner]
        with np.errstate(over="ignore"):
            terms = (data[start:stop].astype(np.uint64) + np.uint64(1)) * \
                _powers(int(lengths.max()))[position]
            sums = np.zeros(n, dtype=np.uint64)
            # Segment sums; empty strings hold no bytes, so segments start at non-empty ones.
            nonempty = lengths > 0
            sums[nonempty] = np.add.reduceat(terms, (offsets[:-1] - start)[nonempty])
            out ^= sums
    if arr.null_count:
        valid = np.asarray(arr.is_valid().to_numpy(zero_copy_only=False))
        out[~valid] = np.uint64(0x5BD1E995)
    return out


def row_hashes(batch: pa.RecordBatch) -> np.ndarray:
    """One uint64 per row from all its values: duplicates and train/test overlap by hash."""
    import pyarrow as pa

    h = np.zeros(batch.num_rows, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for arr in batch.columns:
            if pa.types.is_floating(arr.type):
                vals = arr.to_numpy(zero_copy_only=False).astype(np.float64)
                col = np.where(np.isnan(vals), 0.5, vals).view(np.uint64)
            else:
                col = _string_hashes(arr)
            h = (h ^ col) * _MIX
            h ^= h >> np.uint64(29)
    return h


class Partition:
    """Which bucket a hash goes to: the top bits of the hash times a random odd salt."""

    def __init__(self, buckets: int = BUCKETS, salt: int | None = None) -> None:
        if buckets < 1 or buckets & (buckets - 1):
            raise ValueError(f"buckets must be a power of two, not {buckets}")
        self.buckets = buckets
        self.shift = np.uint64(64 - (buckets.bit_length() - 1))
        self.salt = np.uint64((secrets.randbits(64) if salt is None else salt) | 1)

    def split(self, hashes: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
        """(bucket, the hashes in it) for every non-empty bucket."""
        if self.buckets == 1:
            yield 0, hashes
            return
        with np.errstate(over="ignore"):
            keys = (hashes * self.salt) >> self.shift
        order = np.argsort(keys, kind="stable")
        keys, ordered = keys[order], hashes[order]
        bounds = np.searchsorted(keys, np.arange(self.buckets + 1, dtype=np.uint64))
        for b in range(self.buckets):
            lo, hi = int(bounds[b]), int(bounds[b + 1])
            if hi > lo:
                yield b, ordered[lo:hi]


class RowHashSet:
    """The row hashes of one split, spilled to bucket files past ``memory_rows``.

    ``unique`` keeps one copy of each hash (enough for counting duplicates and for
    being looked up in); without it every row's hash is kept (for counting how many
    rows are found in another set). Use as a context manager: the files go at exit.
    """

    def __init__(self, partition: Partition, *, unique: bool,
                 memory_rows: int | None = None) -> None:
        self.partition = partition
        self.unique = unique
        self.memory_rows = MEMORY_ROWS if memory_rows is None else memory_rows
        self.rows = 0
        self._held: list[np.ndarray] = []
        self._held_rows = 0
        self._dir: Path | None = None

    def __enter__(self) -> RowHashSet:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
        self._held, self._held_rows = [], 0

    @property
    def spilled(self) -> bool:
        return self._dir is not None

    def add(self, hashes: np.ndarray) -> None:
        hashes = np.asarray(hashes, dtype=np.uint64)
        self.rows += hashes.size
        self._held.append(hashes)
        self._held_rows += hashes.size
        if self._held_rows > self.memory_rows:
            self._flush()

    def _flush(self) -> None:
        held = np.concatenate(self._held) if self._held else np.empty(0, np.uint64)
        self._held, self._held_rows = [], 0
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="ci-ml-rowhash-"))
        for bucket, part in self.partition.split(held):
            if self.unique:
                part = _unique(part)
            with open(self._dir / f"{bucket}.u64", "ab") as fh:
                part.tofile(fh)

    def buckets(self) -> Iterator[tuple[int, np.ndarray]]:
        """(bucket, its hashes sorted; unique ones for a unique set), bucket by bucket."""
        if self._dir is None:
            held = np.concatenate(self._held) if self._held else np.empty(0, np.uint64)
            # Not spilled: one bucket, in memory (it is below the memory budget).
            yield 0, _unique(held) if self.unique else np.sort(held)
            return
        self._flush()
        for bucket in range(self.partition.buckets):
            path = self._dir / f"{bucket}.u64"
            if path.is_file():
                part = np.fromfile(path, dtype=np.uint64)
                yield bucket, _unique(part) if self.unique else np.sort(part)

    def _bucket(self, bucket: int) -> np.ndarray:
        assert self._dir is not None
        path = self._dir / f"{bucket}.u64"
        part = np.fromfile(path, dtype=np.uint64) if path.is_file() else np.empty(0, np.uint64)
        return _unique(part) if self.unique else np.sort(part)

    def distinct(self) -> int:
        """How many different hashes (rows) the set holds."""
        return sum(int(_unique(part).size) if not self.unique else int(part.size)
                   for _, part in self.buckets())

    def duplicates(self) -> int:
        """Rows that repeat an earlier row (rows - distinct)."""
        return self.rows - self.distinct()

    def found_in(self, other: RowHashSet) -> int:
        """How many of this set's rows have a hash that ``other`` holds too."""
        if other.partition is not self.partition:
            raise ValueError("both sets must share one partition")
        found = 0
        if not self.spilled and not other.spilled:
            mine, theirs = next(self.buckets())[1], next(other.buckets())[1]
            return _count_in(mine, theirs)
        # Spill both to the same buckets, then compare bucket by bucket.
        for one in (self, other):
            if not one.spilled:
                one._flush()
        for bucket, mine in self.buckets():
            found += _count_in(mine, other._bucket(bucket))
        return found


def _unique(values: np.ndarray) -> np.ndarray:
    """The distinct values, sorted (by sorting: numpy's hash-based unique is slower here)."""
    if values.size < 2:
        return np.sort(values)
    ordered = np.sort(values)
    keep = np.empty(ordered.size, dtype=bool)
    keep[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=keep[1:])
    return ordered[keep]


def _count_in(values: np.ndarray, sorted_set: np.ndarray) -> int:
    """How many of ``values`` occur in the sorted array ``sorted_set``."""
    if values.size == 0 or sorted_set.size == 0:
        return 0
    at = np.searchsorted(sorted_set, values)
    at[at == sorted_set.size] = 0
    return int(np.count_nonzero(sorted_set[at] == values))
