"""Load a CSV split into numeric arrays, with errors that name the file, row and column."""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from ci_ml.config import Config
from ci_ml.errors import InputError
from ci_ml.fsutil import sha256_file


@dataclass(frozen=True)
class Table:
    """One CSV as read: feature matrix, raw labels, column names."""

    path: Path
    features: tuple[str, ...]
    x: np.ndarray  # float64 (n, f); NaN marks a missing value
    labels: tuple[str, ...]
    sha256: str


@dataclass(frozen=True)
class Split:
    """Model-ready arrays: scaled float32 features reshaped to the input shape, int64 classes."""

    x: np.ndarray
    y: np.ndarray


@dataclass(frozen=True)
class DataBundle:
    train: Table
    test: Table
    classes: tuple[str, ...]
    input_shape: tuple[int, ...]
    scale: float
    # Per-feature standardization learned on train (None: features are only scaled).
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def transform(self, raw: np.ndarray) -> np.ndarray:
        """Raw feature rows -> what the model sees (the server applies the same)."""
        x = np.nan_to_num(raw / self.scale)
        if self.mean is not None and self.std is not None:
            x = (x - np.asarray(self.mean)) / np.asarray(self.std)
        return x.astype(np.float32)

    def split(self, which: str) -> Split:
        table = self.train if which == "train" else self.test
        index = {c: i for i, c in enumerate(self.classes)}
        x = self.transform(table.x)
        x = x.reshape((len(x), *self.input_shape))
        y = np.array([index[label] for label in table.labels], dtype=np.int64)
        return Split(x, y)


def _sort_labels(labels: set[str]) -> tuple[str, ...]:
    # Numeric labels sort numerically (2 before 10); others alphabetically.
    try:
        return tuple(sorted(labels, key=float))
    except ValueError:
        return tuple(sorted(labels))


def read_table(path: Path, target: str, features: Sequence[str] | None, key: str) -> Table:
    if not path.exists():
        raise InputError(f"{key}: data file not found: {path}")
    if path.is_dir():
        raise InputError(f"{key}: {path} is a directory, expected a CSV file")
    try:
        text = path.read_text("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"{key}: {path} is not UTF-8 text (byte {exc.start})") from exc
    except OSError as exc:
        raise InputError(f"{key}: cannot read {path}: {exc.strerror}") from exc
    rows = list(csv.reader(text.splitlines()))
    rows = [r for r in rows if any(cell.strip() for cell in r)]
    if not rows:
        raise InputError(f"{key}: {path} is empty, expected a header row and data rows")
    header = [h.strip() for h in rows[0]]
    if len(rows) == 1:
        raise InputError(f"{key}: {path} has a header but no data rows")
    if target not in header:
        raise InputError(
            f"{key}: {path} has no target column {target!r} (data.target); "
            f"columns are: {', '.join(header[:8])}{' ...' if len(header) > 8 else ''}"
        )
    wanted = list(features) if features else [h for h in header if h != target]
    missing = [f for f in wanted if f not in header]
    if missing:
        raise InputError(f"{key}: {path} has no feature column {missing[0]!r} (data.features)")
    if not wanted:
        raise InputError(f"{key}: {path} has no feature columns besides the target {target!r}")
    cols = [header.index(f) for f in wanted]
    t_col = header.index(target)
    x = np.empty((len(rows) - 1, len(cols)), dtype=np.float64)
    labels: list[str] = []
    for r, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise InputError(f"{key}: {path}:{r}: expected {len(header)} fields, got {len(row)}")
        for j, c in enumerate(cols):
            cell = row[c].strip()
            if cell == "" or cell.lower() in ("na", "nan", "null"):
                x[r - 2, j] = math.nan
                continue
            try:
                x[r - 2, j] = float(cell)
            except ValueError:
                raise InputError(
                    f"{key}: {path}:{r}: feature column {header[c]!r} is not numeric: {cell[:40]!r}"
                ) from None
        label = row[t_col].strip()
        if label == "":
            raise InputError(f"{key}: {path}:{r}: target {target!r} is empty")
        labels.append(label)
    if not np.isfinite(x[~np.isnan(x)]).all():
        raise InputError(f"{key}: {path}: features contain infinite values")
    return Table(path, tuple(wanted), x, tuple(labels), sha256_file(path))


@lru_cache(maxsize=8)
def _load_cached(train: Path, test: Path, target: str, features: tuple[str, ...] | None,
                 stamp: tuple[float, float]) -> tuple[Table, Table]:
    return (read_table(train, target, features, "data.train"),
            read_table(test, target, features, "data.test"))


def load_data(config: Config) -> DataBundle:
    data: Mapping[str, Any] = config.section("data")
    train_path, test_path = config.resolve(data["train"]), config.resolve(data["test"])
    features = tuple(data["features"]) if data.get("features") else None
    stamp = tuple(p.stat().st_mtime if p.is_file() else 0.0 for p in (train_path, test_path))
    train, test = _load_cached(train_path, test_path, str(data["target"]), features,
                               (stamp[0], stamp[1]))
    if train.features != test.features:
        raise InputError(f"data.test: {test_path} columns differ from data.train's")
    classes = _sort_labels(set(train.labels))
    unseen = sorted(set(test.labels) - set(classes))
    if unseen:
        raise InputError(f"data.test: label {unseen[0]!r} never appears in data.train")
    if len(classes) < 2:
        raise InputError(f"data.train: target {data['target']!r} has a single class")
    shape_cfg = config.section("model").get("input_shape")
    input_shape = tuple(int(v) for v in shape_cfg) if shape_cfg else (len(train.features),)
    if math.prod(input_shape) != len(train.features):
        raise InputError(
            f"model.input_shape {list(input_shape)} holds {math.prod(input_shape)} values, "
            f"but the data has {len(train.features)} features"
        )
    scale = float(data["scale"])
    mean = std = None
    if data["normalize"] == "standard":
        scaled = np.nan_to_num(train.x / scale)
        mean = tuple(float(v) for v in scaled.mean(axis=0))
        # A constant feature keeps std 1: dividing by ~0 would blow it up.
        std = tuple(float(v) if v > 1e-12 else 1.0 for v in scaled.std(axis=0))
    return DataBundle(train, test, classes, input_shape, scale, mean, std)
