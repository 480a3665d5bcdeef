"""Row hashes in bounded memory: the spilled answers equal the in-memory ones, exactly."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import ci_ml.data.rowhash as rowhash
from ci_ml.config import load_config
from ci_ml.data.checks import run_checks
from ci_ml.data.rowhash import Partition, RowHashSet, row_hashes


def _naive(train: np.ndarray, test: np.ndarray) -> tuple[int, int]:
    dups = train.size - len(set(train.tolist()))
    found = sum(1 for h in test.tolist() if h in set(train.tolist()))
    return dups, found


def _counts(train: np.ndarray, test: np.ndarray, memory_rows: int, batch: int,
            buckets: int = 16) -> tuple[int, int, bool]:
    part = Partition(buckets)
    with RowHashSet(part, unique=True, memory_rows=memory_rows) as tr, \
            RowHashSet(part, unique=False, memory_rows=memory_rows) as te:
        for i in range(0, train.size, batch):
            tr.add(train[i:i + batch])
        for i in range(0, test.size, batch):
            te.add(test[i:i + batch])
        return tr.duplicates(), te.found_in(tr), tr.spilled


@pytest.mark.parametrize("memory_rows", [10, 1000, 10**6])
def test_counts_are_exact_spilled_or_not(memory_rows: int) -> None:
    rng = np.random.default_rng(0)
    pool = rng.integers(0, 2**63, 3000, dtype=np.uint64)
    train = rng.choice(pool, 5000)            # many repeats
    test = np.concatenate([rng.choice(pool, 700), rng.integers(0, 2**63, 300,
                                                                 dtype=np.uint64)])
    dups, found, spilled = _counts(train, test, memory_rows, batch=333)
    assert (dups, found) == _naive(train, test)
    assert spilled == (memory_rows < train.size)


def test_a_file_of_one_repeated_row_spills_one_hash_per_flush(tmp_path: Path) -> None:
    part = Partition(4)
    with RowHashSet(part, unique=True, memory_rows=100) as tr:
        for _ in range(50):
            tr.add(np.full(1000, 42, dtype=np.uint64))
        assert tr.spilled and tr._dir is not None
        on_disk = sum(f.stat().st_size for f in tr._dir.iterdir())
        assert on_disk == 8 * 50          # 50 flushes, one copy each
        assert tr.duplicates() == 50_000 - 1
        files = tr._dir
    assert not files.exists()             # removed at exit


def test_sets_of_different_partitions_are_refused() -> None:
    with RowHashSet(Partition(4), unique=True) as a, RowHashSet(Partition(4), unique=False) as b:
        with pytest.raises(ValueError, match="one partition"):
            b.found_in(a)
    with pytest.raises(ValueError, match="power of two"):
        Partition(12)


def test_the_bucket_key_is_salted_per_run() -> None:
    # Rows crafted to share one bucket under one salt spread out under the next run's.
    hashes = np.arange(1, 20_001, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    first = Partition(256)
    crowded = next(b for b, _ in first.split(hashes))
    same = np.concatenate([part for b, part in first.split(hashes) if b == crowded])
    second = Partition(256)
    assert second.salt != first.salt
    assert len({b for b, _ in second.split(same)}) > 1


def test_equal_rows_hash_equal_whatever_the_batching() -> None:
    table = pa.table({"a": ["x", None, "yy", "x"], "b": pa.array([1.5, 2.0, None, 1.5])})
    whole = row_hashes(table.to_batches()[0])
    parts = np.concatenate([row_hashes(table.slice(i, 1).to_batches()[0]) for i in range(4)])
    assert whole.tolist() == parts.tolist()
    assert whole[0] == whole[3] and len(set(whole.tolist())) == 3


def _report(project: Path) -> dict[str, object]:
    doc = run_checks(load_config(project / "ci-ml.yaml")).to_json()
    return {"checks": doc["checks"], "rows": doc["rows"]}


def _dups_and_overlap(report: dict[str, object]) -> tuple[int, int]:
    checks = {c["name"]: c for c in report["checks"]}  # type: ignore[attr-defined]
    return (int(checks["duplicate_rows_train"]["message"].split()[0]),
            int(checks["train_test_overlap"]["details"]["rows"]))


def test_spilling_changes_no_check_on_real_data(example_project: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    data = example_project / "data"
    base = _dups_and_overlap(_report(example_project))
    # Plant leakage and duplicates: 40 training rows copied into test, 25 repeated in
    # train; then check with the default budget and with one that spills every batch.
    train = (data / "train.csv").read_text().splitlines()
    test = (data / "test.csv").read_text().splitlines()
    (data / "test.csv").write_text("\n".join(test + train[1:41]) + "\n")
    (data / "train.csv").write_text("\n".join(train + train[100:125]) + "\n")
    in_memory = _report(example_project)
    monkeypatch.setattr(rowhash, "MEMORY_ROWS", 7)
    spilled = _report(example_project)
    assert json.dumps(spilled, sort_keys=True) == json.dumps(in_memory, sort_keys=True)
    assert _dups_and_overlap(spilled) == (base[0] + 25, base[1] + 40)


def test_the_reader_thread_stops_with_its_consumer() -> None:
    import threading

    from ci_ml.data.source import prefetch

    made = []

    def numbers() -> Iterator[int]:
        for i in range(1000):
            made.append(i)
            yield i

    stream = prefetch(numbers, depth=2)  # type: ignore[arg-type]
    assert [next(stream) for _ in range(3)] == [0, 1, 2]
    stream.close()
    assert not any(t.name == "ci-ml-reader" for t in threading.enumerate())
    assert len(made) <= 3 + 2 + 1          # never more than `depth` ahead

    def failing() -> Iterator[int]:
        yield 1
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        list(prefetch(failing))  # type: ignore[arg-type]


def test_a_row_longer_than_a_block_is_read_with_the_rows_after_it(tmp_path: Path) -> None:
    from ci_ml.data.source import BLOCK_BYTES, iter_batches, open_data

    # 40 fields of 70 KB: 2.8 MB in one row (arrow itself copes with rows up to about two
    # blocks), each field under the 1 MiB field limit.
    wide = ",".join("v" * 70_000 for _ in range(40))
    rows = [",".join(f"c{i}" for i in range(40))] + [",".join(map(str, range(40)))] * 500
    rows[200] = wide
    path = tmp_path / "wide.csv"
    path.write_text("\n".join(rows) + "\n")
    assert len(wide) > 2 * BLOCK_BYTES
    data = open_data(path, "data.train")
    got = list(iter_batches(data, ["c0"]))
    column = [v for b in got for v in b.column(0).to_pylist()]
    assert len(column) == 500 and column[199] == "v" * 70_000 and column[-1] == "0"
