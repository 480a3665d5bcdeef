"""Raw values -> model inputs: parsing, imputation, one-hot encoding and scaling. No torch.

One implementation for every place a raw row becomes numbers: training, evaluation
(``ci-ml evaluate``, the metrics of a team's own ONNX model) and the server. What a
model was trained with travels in its card (``model.json``, key ``preprocessing``),
so a served model encodes a request exactly as training encoded the training set.

Per field, learned on the training split only:
- numbers (and ISO dates, as days since 1970-01-01): missing values take the training
  median; then divided by ``data.scale``; then, with ``data.normalize: standard``,
  z-scored with the training mean and standard deviation;
- categories: one-hot over the training split's categories (the ``max_categories`` most
  frequent); a missing value, and a value the model never saw, become all zeros, and
  are counted (``EncodeReport``), never a crash.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ci_ml.data.source import MISSING_TOKENS

NUMBER, CATEGORY, DATETIME = "number", "category", "datetime"
_NUMBER = re.compile(r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$")
_MISSING = frozenset(MISSING_TOKENS)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class InvalidValue(ValueError):
    """A raw value that does not fit its field (a word in a number field, say)."""

    def __init__(self, field_name: str, row: int, reason: str) -> None:
        super().__init__(f"row {row}, field {field_name!r}: {reason}")
        self.field = field_name
        self.row = row
        self.reason = reason


# ---------------------------------------------------------------- raw value parsing

def is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    return isinstance(value, str) and value.strip() in _MISSING


def parse_number(value: Any) -> float | None:
    """A raw value as a float; None when missing; ValueError when it is not a number."""
    if is_missing(value):
        return None
    if isinstance(value, bool):
        raise ValueError("expected a number, got a boolean")
    if isinstance(value, int | float):
        out = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if not _NUMBER.match(text):
            # The value itself stays out of the message: the server sends it back.
            raise ValueError("expected a number, got a string that is not one")
        out = float(text)
    else:
        raise ValueError(f"expected a number, got {type(value).__name__}")
    if not math.isfinite(out):
        raise ValueError("expected a finite number")
    return out


def parse_category(value: Any) -> str | None:
    """A raw value as a category label (numbers written the way a CSV writes them)."""
    if is_missing(value):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("expected a category, got a non-finite number")
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, str):
        return value.strip()
    raise ValueError(f"expected a category (string), got {type(value).__name__}")


def parse_datetime_days(value: Any) -> float | None:
    """An ISO date or date-time as days since 1970-01-01 UTC; None if missing or unparsable."""
    if is_missing(value) or not isinstance(value, str):
        return None
    try:
        when = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return (when - _EPOCH).total_seconds() / 86400.0


def parse_datetime(value: Any) -> float | None:
    days = parse_datetime_days(value)
    if days is None and not is_missing(value):
        raise ValueError("expected an ISO date (YYYY-MM-DD[THH:MM:SS])")
    return days


# ---------------------------------------------------------------- the encoder

@dataclass(frozen=True)
class FieldEncoder:
    """How one raw field becomes one column (numbers, dates) or several (one-hot)."""

    name: str
    kind: str
    impute: float = 0.0
    scale: float = 1.0
    mean: float = 0.0
    std: float = 1.0
    categories: tuple[str, ...] = ()

    @property
    def width(self) -> int:
        return len(self.categories) if self.kind == CATEGORY else 1

    @property
    def output_names(self) -> list[str]:
        if self.kind == CATEGORY:
            return [f"{self.name}={c}" for c in self.categories]
        return [self.name]

    def to_json(self) -> dict[str, Any]:
        if self.kind == CATEGORY:
            return {"name": self.name, "kind": self.kind, "categories": list(self.categories)}
        return {"name": self.name, "kind": self.kind, "impute": self.impute, "scale": self.scale,
                "mean": self.mean, "std": self.std}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> FieldEncoder:
        kind = str(d["kind"])
        if kind not in (NUMBER, CATEGORY, DATETIME):
            raise ValueError(f"field {d.get('name')!r}: unknown kind {kind!r}")
        enc = cls(name=str(d["name"]), kind=kind, impute=float(d.get("impute", 0.0)),
                  scale=float(d.get("scale", 1.0)), mean=float(d.get("mean", 0.0)),
                  std=float(d.get("std", 1.0)),
                  categories=tuple(str(c) for c in d.get("categories") or ()))
        for what, v in (("impute", enc.impute), ("mean", enc.mean)):
            if not math.isfinite(v):
                raise ValueError(f"field {enc.name!r}: {what} is not finite")
        for what, v in (("scale", enc.scale), ("std", enc.std)):
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"field {enc.name!r}: {what} must be a positive number")
        return enc


@dataclass(frozen=True)
class EncodeReport:
    """What encoding a batch met: missing values imputed, unseen categories, bad values."""

    rows: int
    missing: Mapping[str, int] = field(default_factory=dict)
    unseen: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    invalid: Mapping[str, int] = field(default_factory=dict)

    @property
    def unseen_total(self) -> int:
        return sum(sum(v.values()) for v in self.unseen.values())

    def to_json(self) -> dict[str, Any]:
        return {"rows": self.rows, "missing": dict(self.missing),
                "unseen": {k: dict(v) for k, v in self.unseen.items()},
                "unseen_total": self.unseen_total, "invalid": dict(self.invalid)}


@dataclass(frozen=True)
class Preprocessor:
    """The fitted encoders of every feature field, in the model's input order."""

    fields: tuple[FieldEncoder, ...]

    @property
    def width(self) -> int:
        return sum(f.width for f in self.fields)

    @property
    def output_names(self) -> list[str]:
        return [n for f in self.fields for n in f.output_names]

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    def to_json(self) -> dict[str, Any]:
        return {"kind": "ci-ml", "fields": [f.to_json() for f in self.fields]}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Preprocessor:
        return cls(tuple(FieldEncoder.from_json(f) for f in d["fields"]))

    def transform(self, columns: Mapping[str, Sequence[Any] | np.ndarray], rows: int, *,
                  strict: bool = False) -> tuple[np.ndarray, EncodeReport]:
        """Raw columns (field name -> raw values) -> the (rows, width) float32 model input.

        ``strict``: a value that does not fit its field raises ``InvalidValue`` (the
        server answers 422); otherwise it is counted and imputed like a missing one.
        """
        out = np.zeros((rows, self.width), dtype=np.float32)
        missing: dict[str, int] = {}
        unseen: dict[str, dict[str, int]] = {}
        invalid: dict[str, int] = {}
        col = 0
        for enc in self.fields:
            values = columns[enc.name]
            if enc.kind == CATEGORY:
                miss, new = _one_hot(enc, values, out[:, col:col + enc.width], strict)
                if new:
                    unseen[enc.name] = new
            else:
                nums, miss, bad = _numbers(enc, values, strict)
                if bad:
                    invalid[enc.name] = bad
                filled = np.where(np.isnan(nums), enc.impute, nums) / enc.scale
                with np.errstate(over="ignore"):
                    scaled = ((filled - enc.mean) / enc.std).astype(np.float32)
                if strict and not np.isfinite(scaled).all():
                    row = int(np.flatnonzero(~np.isfinite(scaled))[0])
                    raise InvalidValue(enc.name, row, "out of range for the model's float32 input")
                out[:, col] = scaled
            if miss:
                missing[enc.name] = miss
            col += enc.width
        return out, EncodeReport(rows, missing, unseen, invalid)


def _numbers(enc: FieldEncoder, values: Sequence[Any] | np.ndarray,
             strict: bool) -> tuple[np.ndarray, int, int]:
    if isinstance(values, np.ndarray) and values.dtype.kind == "f":
        nums = values.astype(np.float64)
        return nums, int(np.isnan(nums).sum()), 0
    parse = parse_number if enc.kind == NUMBER else parse_datetime
    nums = np.empty(len(values), dtype=np.float64)
    missing = bad = 0
    for i, v in enumerate(values):
        try:
            x = parse(v)
        except ValueError as exc:
            if strict:
                raise InvalidValue(enc.name, i, str(exc)) from None
            bad += 1
            x = None
        if x is None:
            nums[i] = math.nan
            missing += 1
        else:
            nums[i] = x
    return nums, missing - bad, bad


def _one_hot(enc: FieldEncoder, values: Sequence[Any] | np.ndarray, out: np.ndarray,
             strict: bool = False) -> tuple[int, dict[str, int]]:
    index = {c: j for j, c in enumerate(enc.categories)}
    missing = 0
    unseen: dict[str, int] = {}
    for i, v in enumerate(values):
        try:
            label = parse_category(v)
        except ValueError as exc:
            if strict:
                raise InvalidValue(enc.name, i, str(exc)) from None
            label = str(v)
        if label is None:
            missing += 1
            continue
        j = index.get(label)
        if j is None:
            key = label[:60]
            unseen[key] = unseen.get(key, 0) + 1
        else:
            out[i, j] = 1.0
    return missing, unseen


def fit_preprocessor(columns: Mapping[str, Sequence[Any] | np.ndarray],
                     kinds: Sequence[tuple[str, str]], *, scale: float = 1.0,
                     standardize: bool = False, max_categories: int = 50) -> Preprocessor:
    """Learn every field's encoder from the training split's raw columns."""
    fields = []
    for name, kind in kinds:
        values = columns[name]
        if kind == CATEGORY:
            counts: dict[str, int] = {}
            for v in values:
                label = parse_category(v)
                if label is not None:
                    counts[label] = counts.get(label, 0) + 1
            top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:max_categories]
            fields.append(FieldEncoder(name, CATEGORY, categories=tuple(sorted(c for c, _ in top))))
            continue
        nums, _, _ = _numbers(FieldEncoder(name, kind), values, strict=False)
        present = nums[~np.isnan(nums)]
        median = float(np.median(present)) if present.size else 0.0
        # Dates are days since 1970: tens of thousands; a date field always gets z-scored.
        field_scale = scale if kind == NUMBER else 1.0
        mean, std = 0.0, 1.0
        if standardize or kind == DATETIME:
            scaled = np.where(np.isnan(nums), median, nums) / field_scale
            mean = float(scaled.mean()) if scaled.size else 0.0
            spread = float(scaled.std()) if scaled.size else 0.0
            # A constant feature keeps std 1: dividing by ~0 would blow it up.
            std = spread if spread > 1e-12 else 1.0
        fields.append(FieldEncoder(name, kind, impute=median, scale=field_scale, mean=mean,
                                   std=std))
    return Preprocessor(tuple(fields))
