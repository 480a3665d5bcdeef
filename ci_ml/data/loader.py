"""Load the train/test pair for training: raw columns, the schema, and model-ready arrays.

The files are read through ``ci_ml.data.source`` (CSV or Parquet, every bad-input
case one ``InputError``); the schema comes from ``data.schema`` or is inferred from
the training split (``ci_ml.data.schema``); the encoders are fitted on the training
split only (``ci_ml.data.features``) and travel with the model. Rows without a
target value cannot be learned from or scored: they are dropped and counted.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ci_ml.config import Config
from ci_ml.data.features import (
    CATEGORY,
    Preprocessor,
    fit_preprocessor,
    parse_category,
    parse_number,
)
from ci_ml.data.profile import ColumnProfile, profile_batches
from ci_ml.data.schema import (
    CLASSIFICATION,
    REGRESSION,
    DataSchema,
    check_columns,
    infer_schema,
    read_schema,
)
from ci_ml.data.source import DataFile, iter_batches, open_data
from ci_ml.errors import InputError
from ci_ml.fsutil import sha256_file


@dataclass(frozen=True)
class Table:
    """One split as read: raw feature columns, raw target values, where it came from."""

    path: Path
    features: tuple[str, ...]
    columns: Mapping[str, np.ndarray]   # field -> object array (str/None) or float64 (NaN)
    labels: tuple[str, ...]             # the target as text, rows without a target dropped
    sha256: str
    dropped: int = 0                    # rows without a target value

    @property
    def rows(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class Split:
    """Model-ready arrays: float32 features in the input shape; int64 classes or float32
    standardized targets (regression: ``target_mean + y * target_std`` in data units)."""

    x: np.ndarray
    y: np.ndarray
    task: str = CLASSIFICATION
    target_mean: float = 0.0
    target_std: float = 1.0


@dataclass(frozen=True)
class DataBundle:
    train: Table
    test: Table
    classes: tuple[str, ...]           # empty for regression
    input_shape: tuple[int, ...]
    schema: DataSchema
    preprocessor: Preprocessor
    task: str = CLASSIFICATION
    target_mean: float = 0.0
    target_std: float = 1.0
    scale: float = 1.0
    standardized: bool = False
    profiles: Mapping[str, ColumnProfile] = field(default_factory=dict)  # training split's

    # The v1 model card's view (all-numeric data only): raw values / scale, z-scored.
    @property
    def mean(self) -> tuple[float, ...] | None:
        if not self.numeric_only or not self.standardized:
            return None
        return tuple(f.mean for f in self.preprocessor.fields)

    @property
    def std(self) -> tuple[float, ...] | None:
        if not self.numeric_only or not self.standardized:
            return None
        return tuple(f.std for f in self.preprocessor.fields)

    @property
    def numeric_only(self) -> bool:
        return all(f.kind == "number" for f in self.preprocessor.fields)

    def encode(self, table: Table) -> np.ndarray:
        x, _ = self.preprocessor.transform(table.columns, table.rows)
        return x.reshape((len(x), *self.input_shape))

    def targets(self, table: Table) -> np.ndarray:
        if self.task == REGRESSION:
            y = np.array([float(v) for v in table.labels], dtype=np.float64)
            return ((y - self.target_mean) / self.target_std).astype(np.float32)
        index = {c: i for i, c in enumerate(self.classes)}
        return np.array([index[label] for label in table.labels], dtype=np.int64)

    def split(self, which: str) -> Split:
        table = self.train if which == "train" else self.test
        return Split(self.encode(table), self.targets(table), self.task, self.target_mean,
                     self.target_std)


def _sort_labels(labels: set[str]) -> tuple[str, ...]:
    # Numeric labels sort numerically (2 before 10); others alphabetically.
    try:
        return tuple(sorted(labels, key=float))
    except ValueError:
        return tuple(sorted(labels))


def data_options(config: Config) -> dict[str, Any]:
    data = config.section("data")
    return {"encoding": str(data.get("encoding", "utf-8")),
            "delimiter": str(data.get("delimiter", ","))}


def open_split(config: Config, which: str) -> DataFile:
    data = config.section("data")
    return open_data(config.resolve(str(data[which])), f"data.{which}", **data_options(config))


def read_columns(source: DataFile, *, profile: bool = False,
                 extra_missing: tuple[str, ...] = ()) -> tuple[
                     dict[str, np.ndarray], int, dict[str, ColumnProfile] | None]:
    """Every column of the file in memory (object arrays of str/None, or float64)."""
    import pyarrow as pa

    parts: dict[str, list[np.ndarray]] = {c: [] for c in source.columns}
    batches = list(iter_batches(source))
    for batch in batches:
        for name, arr in zip(batch.schema.names, batch.columns, strict=True):
            if pa.types.is_floating(arr.type):  # Parquet numbers
                parts[name].append(arr.to_numpy(zero_copy_only=False).astype(np.float64))
            else:
                parts[name].append(np.asarray(arr.to_pylist(), dtype=object))
    columns = {}
    for name, chunks in parts.items():
        col = np.concatenate(chunks) if chunks else np.empty(0, dtype=object)
        if extra_missing and col.dtype == object:
            col = np.array([None if v in extra_missing else v for v in col], dtype=object)
        columns[name] = col
    rows = sum(b.num_rows for b in batches)
    profiles = None
    if profile:
        profiles, _, _ = profile_batches(_missing_applied(batches, extra_missing),
                                         list(source.columns))
    return columns, rows, profiles


def _missing_applied(batches: list[Any], extra: tuple[str, ...]) -> list[Any]:
    if not extra:
        return batches
    import pyarrow as pa
    import pyarrow.compute as pc

    out = []
    for b in batches:
        arrays = [pc.if_else(pc.is_in(a, pa.array(list(extra), a.type)),
                             pa.scalar(None, a.type), a) if pa.types.is_string(a.type) else a
                  for a in b.columns]
        out.append(pa.RecordBatch.from_arrays(arrays, names=b.schema.names))
    return out


def _table(source: DataFile, columns: dict[str, np.ndarray], rows: int,
           schema: DataSchema) -> Table:
    check_columns(schema, tuple(columns), source.key, source.path)
    target = schema.target
    raw_target = columns[target]
    keep = np.ones(rows, dtype=bool)
    labels: list[str] = []
    for i, v in enumerate(raw_target):
        if schema.task == REGRESSION:
            try:
                num = parse_number(v)
            except ValueError:
                raise InputError(f"{source.key}: {source.path}: data row {i + 1}: target "
                                 f"{target!r} is not a number: {str(v)[:40]!r} (a regression "
                                 "target needs numbers; set data.task: classification for "
                                 "labels)") from None
            if num is None:
                keep[i] = False
            else:
                labels.append(repr(num))
        else:
            label = parse_category(v)
            if label is None:
                keep[i] = False
            else:
                labels.append(label)
    if not labels:
        raise InputError(f"{source.key}: {source.path}: no row has a value in the target "
                         f"column {target!r}")
    names = tuple(c.name for c in schema.features)
    kept = {n: columns[n][keep] for n in names}
    return Table(source.path, names, kept, tuple(labels), sha256_file(source.path),
                 dropped=int(rows - keep.sum()))


# Steps in one process (preflight, then run) read the same files: keep the last few.
_Loaded = tuple[Table, Table, DataSchema, Mapping[str, ColumnProfile]]
_CACHE: dict[tuple[Any, ...], _Loaded] = {}
_CACHE_SIZE = 4


def _read_split_pair(config: Config) -> _Loaded:
    data = config.section("data")
    train_src, test_src = open_split(config, "train"), open_split(config, "test")
    extra = tuple(str(v) for v in data.get("missing_values") or ())
    train_cols, train_rows, profiles = read_columns(train_src, profile=True, extra_missing=extra)
    assert profiles is not None
    test_cols, test_rows, _ = read_columns(test_src, extra_missing=extra)
    if data.get("schema"):
        schema = read_schema(config.resolve(str(data["schema"])))
        if schema.target != str(data["target"]):
            raise InputError(f"data.schema: its target is {schema.target!r}, but data.target "
                             f"is {data['target']!r}")
    else:
        features = data.get("features")
        ids = data.get("id_columns")
        schema = infer_schema(profiles, train_rows, target=str(data["target"]),
                              task=str(data.get("task", "auto")),
                              features=list(features) if features else None,
                              id_columns=list(ids) if ids is not None else None,
                              source={"path": train_src.path.name})
    train = _table(train_src, train_cols, train_rows, schema)
    test = _table(test_src, test_cols, test_rows, schema)
    return train, test, schema, profiles


def load_data(config: Config) -> DataBundle:
    data: Mapping[str, Any] = config.section("data")
    paths = [config.resolve(str(data[k])) for k in ("train", "test")]
    if data.get("schema"):
        paths.append(config.resolve(str(data["schema"])))
    stamp = tuple((p.stat().st_mtime_ns, p.stat().st_size) if p.is_file() else (0, 0)
                  for p in paths)
    key = (str(config.path), config.digest("data"), stamp)
    if key not in _CACHE:
        while len(_CACHE) >= _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = _read_split_pair(config)
    train, test, schema, profiles = _CACHE[key]
    task = schema.task
    classes: tuple[str, ...] = ()
    target_mean, target_std = 0.0, 1.0
    if task == CLASSIFICATION:
        classes = _sort_labels(set(train.labels))
        unseen = sorted(set(test.labels) - set(classes))
        if unseen:
            raise InputError(f"data.test: label {unseen[0]!r} never appears in data.train")
        if len(classes) < 2:
            raise InputError(f"data.train: target {data['target']!r} has a single class")
    else:
        y = np.array([float(v) for v in train.labels])
        target_mean = float(y.mean())
        target_std = float(y.std()) if float(y.std()) > 1e-12 else 1.0
    kinds = [(c.name, c.kind) for c in schema.features]
    standardize = data.get("normalize", "none") == "standard"
    prep = fit_preprocessor(train.columns, kinds, scale=float(data.get("scale", 1.0)),
                            standardize=standardize,
                            max_categories=int(data.get("max_categories", 50)))
    shape_cfg = config.section("model").get("input_shape")
    input_shape = tuple(int(v) for v in shape_cfg) if shape_cfg else (prep.width,)
    if math.prod(input_shape) != prep.width:
        encoded = any(f.kind == CATEGORY for f in prep.fields)
        raise InputError(
            f"model.input_shape {list(input_shape)} holds {math.prod(input_shape)} values, "
            + (f"but the data has {prep.width} model inputs ({len(schema.features)} features, "
               "categories one-hot encoded)" if encoded
               else f"but the data has {prep.width} features"))
    return DataBundle(train, test, classes, input_shape, schema, prep, task, target_mean,
                      target_std, float(data.get("scale", 1.0)), standardize, profiles)
