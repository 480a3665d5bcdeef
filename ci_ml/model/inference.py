"""Raw rows -> ONNX feed -> predictions: the one path from a user's values to an answer.

Torch-free. ``OnnxModel`` is an ONNX Runtime session plus its card; evaluation of any
ONNX model (``ci-ml evaluate``, the metrics of a team's own model after
``train.command``) and the server all call ``OnnxModel.predict`` with raw columns, so
a served model answers a row exactly as the in-process model does.

Rows arrive as named fields (``{"island": "Biscoe", "bill_length_mm": null}``) or as
lists in the card's field order; ``columns_from_rows`` validates them into columns.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ci_ml.data.features import (
    EncodeReport,
    InvalidValue,
    is_missing,
    parse_category,
    parse_number,
)
from ci_ml.errors import InputError
from ci_ml.model.card import CLASSIFICATION, InputBinding, ModelCard, read_card

ORT_TYPES = {"tensor(float)": "float32", "tensor(double)": "float64",
             "tensor(float16)": "float16", "tensor(int64)": "int64", "tensor(int32)": "int32",
             "tensor(string)": "string", "tensor(bool)": "bool"}
NP_TYPES = {"float32": np.float32, "float64": np.float64, "float16": np.float16,
            "int64": np.int64, "int32": np.int32, "bool": np.bool_}
CHUNK = 4096


class RowError(InputError):
    """A request row does not fit the model's fields: the server answers 422 with this text."""

    def __init__(self, message: str, row: int | None = None, field: str | None = None) -> None:
        super().__init__(message)
        self.row = row
        self.field = field


@dataclass(frozen=True)
class Prediction:
    """What a model answers for a batch of rows."""

    task: str
    labels: tuple[str, ...] = ()            # classification: predicted class per row
    probabilities: np.ndarray | None = None  # classification: (rows, classes), or None
    values: np.ndarray | None = None        # regression: (rows,) float64
    report: EncodeReport | None = None

    @property
    def rows(self) -> int:
        if self.task == CLASSIFICATION:
            return len(self.labels)
        return len(self.values) if self.values is not None else 0

    def outputs(self) -> list[dict[str, Any]]:
        """Per row, as the server answers and the request log records it."""
        if self.task == CLASSIFICATION:
            probs = self.probabilities
            return [{"label": label,
                     "probabilities": ([round(float(p), 6) for p in probs[i]]
                                       if probs is not None else None)}
                    for i, label in enumerate(self.labels)]
        assert self.values is not None
        return [{"value": float(v)} for v in self.values]


def columns_from_rows(rows: Sequence[Any], fields: Sequence[str]) -> dict[str, list[Any]]:
    """Validate request rows (objects of named fields, or lists in field order) into columns.

    A field the model takes may be missing from an object or null (a missing value);
    an unknown field name is an error, so is a list of the wrong length or a nested value.
    """
    known = set(fields)
    columns: dict[str, list[Any]] = {f: [] for f in fields}
    for i, row in enumerate(rows):
        if isinstance(row, Mapping):
            unknown = [k for k in row if k not in known]
            if unknown:
                # The name is not echoed: a response never reflects request text.
                raise RowError(f"inputs[{i}]: {len(unknown)} unknown field(s); the model takes "
                               f"{len(fields)} fields: see /openapi.json", i)
            values = [row.get(f) for f in fields]
        elif isinstance(row, list | tuple):
            if len(row) != len(fields):
                raise RowError(f"inputs[{i}]: expected {len(fields)} values in field order, "
                               f"got {len(row)}", i)
            values = list(row)
        else:
            raise RowError(f"inputs[{i}]: expected an object of named fields or a list of "
                           f"{len(fields)} values", i)
        for f, v in zip(fields, values, strict=True):
            if not (v is None or isinstance(v, str | int | float)):
                raise RowError(f"inputs[{i}] field {fields.index(f)}: expected a number, a "
                               "string or null", i, f)
            if isinstance(v, str) and len(v) > 1024:
                raise RowError(f"inputs[{i}] field {fields.index(f)}: value longer than 1024 "
                               "characters", i, f)
            columns[f].append(v)
    return columns


def make_session(path: Path, threads: int = 1) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), sess_options=options,
                                    providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own pybind classes, not a common base
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise InputError(f"{path}: not a valid ONNX model ({first})") from exc


class OnnxModel:
    """An ONNX Runtime session and the card that says how to feed it and read its answer."""

    def __init__(self, path: Path, card: ModelCard | None = None, threads: int = 1,
                 session: Any = None) -> None:
        self.path = path
        self.card = card if card is not None else read_card(path.parent)
        self.session = session if session is not None else make_session(path, threads)
        self._inputs = {i.name: i for i in self.session.get_inputs()}
        self._outputs = [o.name for o in self.session.get_outputs()]
        self._categories = {f.name: frozenset(f.categories) for f in self.card.fields
                            if f.categories}
        self.bindings = self._bind()

    def _bind(self) -> tuple[InputBinding, ...]:
        """The card's bindings checked against the graph (a lone encoded input may be
        named anything: exporters differ)."""
        card, graph = self.card, self._inputs
        bindings = list(card.inputs)
        if len(bindings) == 1 and len(graph) == 1 and bindings[0].name not in graph:
            only = next(iter(graph))
            bindings = [InputBinding(only, bindings[0].dtype, bindings[0].fields,
                                     bindings[0].encoded, bindings[0].shape)]
        names = {b.name for b in bindings}
        if names != set(graph):
            raise InputError(f"{self.path}: the graph's inputs ({', '.join(sorted(graph))}) are "
                             f"not the card's ({', '.join(sorted(names))})")
        checked = []
        for b in bindings:
            dtype = ORT_TYPES.get(graph[b.name].type)
            if dtype is None:
                raise InputError(f"{self.path}: input {b.name!r} has type {graph[b.name].type}, "
                                 "which ci-ml cannot feed")
            if dtype != b.dtype:
                b = InputBinding(b.name, dtype, b.fields, b.encoded, b.shape)
            checked.append(b)
        for out in (card.outputs.scores, card.outputs.label):
            if out is not None and out not in self._outputs:
                raise InputError(f"{self.path}: the card names output {out!r}; the graph has "
                                 f"{', '.join(self._outputs)}")
        return tuple(checked)

    @property
    def fields(self) -> tuple[str, ...]:
        return self.card.features

    def feed(self, columns: Mapping[str, Sequence[Any] | np.ndarray], rows: int, *,
             strict: bool = False) -> tuple[dict[str, np.ndarray], EncodeReport]:
        """The tensors for one batch of raw columns (field -> raw values), and what the
        batch held: missing values, categories the model never saw, values that did not fit."""
        card = self.card
        reports: list[EncodeReport] = []
        feed: dict[str, np.ndarray] = {}
        for b in self.bindings:
            if b.encoded:
                assert card.preprocessing is not None
                x, report = card.preprocessing.transform(columns, rows, strict=strict)
                reports.append(report)
                dims = self._dims(b)
                feed[b.name] = x.astype(NP_TYPES.get(b.dtype, np.float32), copy=False).reshape(
                    (rows, *dims))
            else:
                feed[b.name], report = self._raw(b, columns, rows, strict)
                reports.append(report)
        return feed, merge_reports(reports) if reports else EncodeReport(rows)

    def _dims(self, b: InputBinding) -> tuple[int, ...]:
        if b.shape:
            return b.shape
        shape = self._inputs[b.name].shape[1:]
        return tuple(d if isinstance(d, int) else -1 for d in shape) or (-1,)

    def _raw(self, b: InputBinding, columns: Mapping[str, Sequence[Any] | np.ndarray],
             rows: int, strict: bool) -> tuple[np.ndarray, EncodeReport]:
        """Raw fields, cast to what the graph declares: one [rows, 1] column per field, or
        one [rows, n] matrix of numeric fields (missing: NaN for numbers, "" for strings)."""
        cols = []
        missing: dict[str, int] = {}
        unseen: dict[str, dict[str, int]] = {}
        invalid: dict[str, int] = {}
        for name in b.fields:
            values = columns[name]
            if b.dtype in ("string", "bool"):
                labels = [_category(v, name, i, strict) for i, v in enumerate(values)]
                known = self._categories.get(name)
                new: dict[str, int] = {}
                for label in labels:
                    if label is not None and known and label not in known:
                        new[label[:60]] = new.get(label[:60], 0) + 1
                if new:
                    unseen[name] = new
                n_missing = sum(1 for label in labels if label is None)
                if b.dtype == "string":
                    col = np.array(["" if lab is None else lab for lab in labels], dtype=object)
                else:
                    col = np.array([lab in ("true", "1", "yes") for lab in labels])
            else:
                col, n_missing, n_bad = _numeric(values, name, b.dtype, strict)
                if n_bad:
                    invalid[name] = n_bad
            if n_missing:
                missing[name] = n_missing
            cols.append(col.reshape(rows, 1))
        arr = np.concatenate(cols, axis=1) if len(cols) > 1 else cols[0]
        graph_rank = len(self._inputs[b.name].shape)
        if graph_rank == 1:
            arr = arr.reshape(rows)
        if b.dtype in NP_TYPES:
            with np.errstate(over="ignore"):
                cast: np.ndarray = arr.astype(NP_TYPES[b.dtype], copy=False)
            if strict and cast.dtype.kind == "f" and np.isinf(cast).any() \
                    and not np.isinf(arr.astype(np.float64)).any():
                raise InvalidValue(b.fields[0] if len(b.fields) == 1 else b.name,
                                   int(np.argwhere(np.isinf(cast))[0][0]),
                                   f"out of range for the model's {b.dtype} input")
            arr = cast
        return arr, EncodeReport(rows, missing, unseen, invalid)

    def run(self, feed: Mapping[str, np.ndarray]) -> list[Any]:
        return list(self.session.run(None, dict(feed)))

    def predict(self, columns: Mapping[str, Sequence[Any] | np.ndarray], rows: int, *,
                strict: bool = False) -> Prediction:
        """Predictions for raw columns, run in chunks of ``CHUNK`` rows."""
        if rows == 0:
            raise InputError("no rows to predict")
        parts: list[Prediction] = []
        for start in range(0, rows, CHUNK):
            stop = min(rows, start + CHUNK)
            chunk = {k: v[start:stop] for k, v in columns.items()}
            feed, report = self.feed(chunk, stop - start, strict=strict)
            try:
                outputs = self.run(feed)
            except Exception as exc:  # onnxruntime's own error classes
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
                raise InputError(f"{self.path}: inference failed ({first})") from exc
            parts.append(self.decode(outputs, stop - start, report))
        return _concat(parts) if len(parts) > 1 else parts[0]

    def predict_rows(self, rows: Sequence[Any]) -> Prediction:
        """The server's entry: validate raw request rows strictly, then predict."""
        columns = columns_from_rows(rows, self.fields)
        try:
            return self.predict(columns, len(rows), strict=True)
        except InvalidValue as exc:
            index = self.fields.index(exc.field) if exc.field in self.fields else -1
            raise RowError(f"inputs[{exc.row}] field {index}: {exc.reason}", exc.row,
                           exc.field) from None

    def decode(self, outputs: Sequence[Any], rows: int, report: EncodeReport) -> Prediction:
        return decode(self.card, dict(zip(self._outputs, outputs, strict=True)), rows, report,
                      str(self.path))


def decode(card: ModelCard, outputs: Mapping[str, Any], rows: int, report: EncodeReport | None,
           where: str) -> Prediction:
    """A model's raw outputs (graph output name -> value) as labels and probabilities, or as
    values in the target's units."""
    ob = card.outputs
    raw = outputs[ob.scores] if ob.scores is not None and ob.scores in outputs \
        else next(iter(outputs.values()))
    if card.task != CLASSIFICATION:
        values = np.asarray(raw, dtype=np.float64).reshape(rows, -1)[:, 0]
        if card.target_scale is not None:
            values = card.target_scale[0] + values * card.target_scale[1]
        if not np.isfinite(values).all():
            raise InputError(f"{where}: the model produced a non-finite value")
        return Prediction(card.task, values=values, report=report)
    probs = None if ob.scores is None and ob.label is not None \
        else _probabilities(card, raw, rows, where)
    if ob.label is not None:
        labels = tuple(parse_category(v) or "" for v in np.asarray(outputs[ob.label]).reshape(rows))
    else:
        assert probs is not None
        labels = tuple(card.classes[i] for i in probs.argmax(axis=1))
    return Prediction(card.task, labels=labels, probabilities=probs, report=report)


def _probabilities(card: ModelCard, raw: Any, rows: int, where: str) -> np.ndarray:
    if card.outputs.kind == "zipmap":
        probs = np.zeros((rows, len(card.classes)))
        index = {c: j for j, c in enumerate(card.classes)}
        for i, entry in enumerate(raw):
            for key, p in entry.items():
                j = index.get(parse_category(key) or "")
                if j is not None:
                    probs[i, j] = float(p)
        return probs
    scores = np.asarray(raw, dtype=np.float64).reshape(rows, -1)
    if scores.shape[1] != len(card.classes):
        raise InputError(f"{where}: the model returned {scores.shape[1]} scores for "
                         f"{len(card.classes)} classes")
    if not np.isfinite(scores).all():
        raise InputError(f"{where}: the model produced non-finite scores")
    if card.outputs.kind == "probabilities":
        return scores
    shifted = scores - scores.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return np.asarray(exp / exp.sum(axis=1, keepdims=True))


def _category(value: Any, name: str, row: int, strict: bool) -> str | None:
    try:
        return parse_category(value)
    except ValueError as exc:
        if strict:
            raise InvalidValue(name, row, str(exc)) from None
        return None


def _numeric(values: Sequence[Any] | np.ndarray, name: str, dtype: str,
             strict: bool) -> tuple[np.ndarray, int, int]:
    """Numbers for a raw numeric input: (values, missing, invalid); NaN marks missing (and,
    when not strict, invalid) values; an integer input cannot hold a missing value."""
    if isinstance(values, np.ndarray) and values.dtype.kind == "f" and dtype.startswith("float"):
        nums = values.astype(np.float64)
        return nums, int(np.isnan(nums).sum()), 0
    integer = dtype.startswith("int")
    out = np.empty(len(values), dtype=np.float64)
    missing = bad = 0
    for i, v in enumerate(values):
        try:
            x = parse_number(v)
            if x is not None and integer and not float(x).is_integer():
                raise ValueError("expected an integer")
        except ValueError as exc:
            if strict:
                raise InvalidValue(name, i, str(exc)) from None
            bad += 1
            x = None
        if x is None:
            if integer and strict and is_missing(v):
                raise InvalidValue(name, i, "a missing value, but the model takes integers")
            missing += is_missing(v)
            x = 0.0 if integer else math.nan
        out[i] = x
    return out, missing, bad


def _concat(parts: Sequence[Prediction]) -> Prediction:
    first = parts[0]
    reports = [p.report for p in parts if p.report is not None]
    report = merge_reports(reports) if reports else None
    if first.task == CLASSIFICATION:
        probs = ([p.probabilities for p in parts if p.probabilities is not None])
        return Prediction(first.task, labels=tuple(lab for p in parts for lab in p.labels),
                          probabilities=np.concatenate(probs) if len(probs) == len(parts)
                          else None, report=report)
    return Prediction(first.task, values=np.concatenate([p.values for p in parts
                                                         if p.values is not None]),
                      report=report)


def merge_reports(reports: Sequence[EncodeReport]) -> EncodeReport:
    missing: dict[str, int] = {}
    invalid: dict[str, int] = {}
    unseen: dict[str, dict[str, int]] = {}
    for r in reports:
        for k, n in r.missing.items():
            missing[k] = missing.get(k, 0) + n
        for k, n in r.invalid.items():
            invalid[k] = invalid.get(k, 0) + n
        for k, vals in r.unseen.items():
            into = unseen.setdefault(k, {})
            for v, n in vals.items():
                into[v] = into.get(v, 0) + n
    return EncodeReport(sum(r.rows for r in reports), missing, unseen, invalid)
