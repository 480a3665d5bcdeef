"""Per-column schema: kinds, roles, ranges, categories, nullability; inferred from a profile.

``ci-ml data infer`` writes it (``data-schema.json``); ``ci-ml data check`` checks both
splits against it (``data.schema`` in the config, or one inferred from the training
split); training takes its feature list from it. Roles:

- ``target``: the label column (``data.target``);
- ``feature``: what the model sees;
- ``identifier``: a column that identifies rows rather than describes them (a row
  index, a unique id, mostly-unique names, a timestamp used as a key): found, named
  with the reason, and kept out of the features unless ``data.features`` lists it or
  ``data.id_columns`` says otherwise;
- ``excluded``: not in ``data.features``, or holding no value at all.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ci_ml.data.profile import ColumnProfile, ColumnReference
from ci_ml.errors import ConfigError, InputError

FORMAT = "ci-ml/data-schema/1"
NUMBER, CATEGORY, DATETIME, EMPTY = "number", "category", "datetime", "empty"
FEATURE, TARGET, IDENTIFIER, EXCLUDED = "feature", "target", "identifier", "excluded"
CLASSIFICATION, REGRESSION = "classification", "regression"
# Integer targets with at most this many distinct values are classes, not quantities.
MAX_INTEGER_CLASSES = 20
ID_NAME = re.compile(r"^(id|idx|index|key|uuid|guid|row|rowid|row_?id|unnamed:? ?\d*|"
                     r".*[_ -]id|.*[a-z]Id|.*ID)$", re.IGNORECASE)
MIN_ID_ROWS = 20


@dataclass(frozen=True)
class ColumnSchema:
    name: str
    kind: str                                   # number | category | datetime | empty
    role: str                                   # feature | target | identifier | excluded
    nullable: bool
    missing_share: float
    low: float | None = None                    # number: min; datetime: days since 1970
    high: float | None = None
    integral: bool = False
    categories: Mapping[str, float] = field(default_factory=dict)  # value -> share of rows
    distinct: int = 0
    deciles: tuple[float, ...] = ()             # number: the 10%..90% quantiles
    reason: str = ""                            # why identifier / excluded
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "kind": self.kind, "role": self.role,
                               "nullable": self.nullable,
                               "missing_share": round(self.missing_share, 6),
                               "distinct": self.distinct}
        if self.kind in (NUMBER, DATETIME):
            out.update({"min": self.low, "max": self.high, "integral": self.integral,
                        "deciles": [round(v, 6) for v in self.deciles]})
        if self.kind == CATEGORY:
            out["categories"] = {k: round(v, 6) for k, v in self.categories.items()}
        if self.reason:
            out["reason"] = self.reason
        if self.note:
            out["note"] = self.note
        return out

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ColumnSchema:
        kind = str(d["kind"])
        if kind not in (NUMBER, CATEGORY, DATETIME, EMPTY):
            raise ValueError(f"column {d.get('name')!r}: unknown kind {kind!r}")
        role = str(d.get("role", FEATURE))
        if role not in (FEATURE, TARGET, IDENTIFIER, EXCLUDED):
            raise ValueError(f"column {d.get('name')!r}: unknown role {role!r}")
        cats = d.get("categories") or {}
        if isinstance(cats, list):  # a hand-written schema may list categories only
            cats = {str(c): 0.0 for c in cats}
        return cls(
            name=str(d["name"]), kind=kind, role=role, nullable=bool(d.get("nullable", True)),
            missing_share=float(d.get("missing_share", 0.0)),
            low=_opt_float(d.get("min")), high=_opt_float(d.get("max")),
            integral=bool(d.get("integral", False)),
            categories={str(k): float(v) for k, v in cats.items()},
            distinct=int(d.get("distinct", len(cats))),
            deciles=tuple(float(v) for v in d.get("deciles") or ()),
            reason=str(d.get("reason", "")), note=str(d.get("note", "")))

    def reference(self) -> ColumnReference:
        return ColumnReference(kind=self.kind, low=self.low, high=self.high,
                               categories=frozenset(self.categories))


def _opt_float(v: Any) -> float | None:
    return None if v is None else float(v)


@dataclass(frozen=True)
class DataSchema:
    columns: tuple[ColumnSchema, ...]
    target: str
    task: str
    rows: int
    source: Mapping[str, str] = field(default_factory=dict)

    def column(self, name: str) -> ColumnSchema:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def features(self) -> tuple[ColumnSchema, ...]:
        return tuple(c for c in self.columns if c.role == FEATURE)

    @property
    def identifiers(self) -> tuple[ColumnSchema, ...]:
        return tuple(c for c in self.columns if c.role == IDENTIFIER)

    @property
    def target_column(self) -> ColumnSchema:
        return self.column(self.target)

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "target": self.target, "task": self.task, "rows": self.rows,
                "source": dict(self.source), "columns": [c.to_json() for c in self.columns]}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> DataSchema:
        if d.get("format") != FORMAT:
            raise ValueError(f"format is {d.get('format')!r}, expected {FORMAT!r}")
        cols = tuple(ColumnSchema.from_json(c) for c in d["columns"])
        names = [c.name for c in cols]
        if len(set(names)) != len(names):
            raise ValueError("a column is listed twice")
        task = str(d["task"])
        if task not in (CLASSIFICATION, REGRESSION):
            raise ValueError(f"task {task!r} is not classification or regression")
        return cls(cols, str(d["target"]), task, int(d.get("rows", 0)), dict(d.get("source", {})))


def read_schema(path: Path, key: str = "data.schema") -> DataSchema:
    try:
        doc = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise InputError(f"{key}: {path}: schema file not found (write one with "
                         "`ci-ml data infer`)") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"{key}: {path}: not a readable JSON schema ({exc})") from None
    try:
        if not isinstance(doc, dict):
            raise ValueError("expected a JSON object")
        return DataSchema.from_json(doc)
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{key}: {path}: not a valid data schema ({exc})") from None


# -------------------------------------------------------------------------- inference

# A column this much numbers, with at most three other distinct values, is a number
# column with a few bad values (counted as invalid by the data check), not categories.
MOSTLY_NUMERIC = 0.95


def mostly_numeric(p: ColumnProfile) -> bool:
    return (p.numeric_like < p.present and p.numeric_like >= MOSTLY_NUMERIC * p.present
            and len(p.non_numeric) <= 3)


def column_kind(p: ColumnProfile) -> str:
    if p.present == 0:
        return EMPTY
    if p.numeric_like == p.present or mostly_numeric(p):
        return NUMBER
    if p.date_like == p.present:
        return DATETIME
    return CATEGORY


def identifier_reason(p: ColumnProfile, kind: str) -> str:
    """Why this column identifies rows rather than describes them ('' if it does not)."""
    if p.present < MIN_ID_ROWS:
        return ""
    unique = p.unique_ratio
    if ID_NAME.match(p.name) and unique >= 0.95:
        return f"named like an identifier and {unique:.0%} unique"
    if kind == NUMBER and p.integral and unique >= 0.99 and p.low is not None \
            and p.high is not None and p.high - p.low + 1 == p.count:
        return "a row index: consecutive integers, one per row"
    if kind == CATEGORY and (p.counts is None or (p.distinct >= MIN_ID_ROWS and unique >= 0.5)):
        shown = f"{p.distinct}+" if p.counts is None else str(p.distinct)
        return f"mostly unique strings ({shown} distinct in {p.present} rows): names or keys"
    if kind == DATETIME and unique >= 0.95:
        return "a timestamp used as a key: unique per row"
    return ""


def infer_task(p: ColumnProfile, configured: str = "auto") -> str:
    kind = column_kind(p)
    if configured != "auto":
        if configured == REGRESSION and kind != NUMBER:
            example = p.non_numeric[0] if p.non_numeric else "?"
            raise ConfigError(f"data.task is regression, but target {p.name!r} holds values "
                              f"that are not numbers (e.g. {example!r})")
        return configured
    every_value_a_number = p.present > 0 and p.numeric_like == p.present
    if every_value_a_number and not (p.integral and p.distinct <= MAX_INTEGER_CLASSES
                                     and p.counts is not None):
        return REGRESSION
    return CLASSIFICATION


def _days(profile: ColumnProfile) -> tuple[float | None, float | None]:
    if profile.counts is None:
        return None, None
    from ci_ml.data.features import parse_datetime_days

    days = [d for d in (parse_datetime_days(v) for v in profile.counts) if d is not None]
    return (min(days), max(days)) if days else (None, None)


def column_schema(p: ColumnProfile, role: str, reason: str = "") -> ColumnSchema:
    kind = column_kind(p)
    low, high = (p.low, p.high) if kind == NUMBER else _days(p) if kind == DATETIME \
        else (None, None)
    cats: dict[str, float] = {}
    if kind == CATEGORY and p.counts is not None:
        cats = {k: n / p.rows for k, n in sorted(p.counts.items(), key=lambda kv: (-kv[1],
                                                                                     kv[0]))}
    note = ""
    shown = ", ".join(repr(v) for v in p.non_numeric[:3])
    if kind == NUMBER and mostly_numeric(p):
        note = (f"{p.present - p.numeric_like} of {p.present} values are not numbers ({shown}): "
                "invalid values (the data check counts them; training imputes them); if they "
                "mark missing values, list them in data.missing_values")
    elif kind == CATEGORY and p.numeric_like and p.numeric_like >= 0.5 * p.present:
        note = (f"{p.present - p.numeric_like} of {p.present} values are not numbers ({shown}, "
                "...): read as categories")
    if kind == NUMBER and p.distinct == 1 and p.missing == 0:
        note = "constant: the same value in every row"
    return ColumnSchema(
        name=p.name, kind=kind, role=role, nullable=p.missing > 0,
        missing_share=p.missing_share, low=low, high=high, integral=p.integral,
        categories=cats, distinct=p.distinct,
        deciles=tuple(p.quantiles([i / 10 for i in range(1, 10)])) if kind == NUMBER else (),
        reason=reason, note=note)


def infer_schema(profiles: Mapping[str, ColumnProfile], rows: int, *, target: str,
                 task: str = "auto", features: Sequence[str] | None = None,
                 id_columns: Sequence[str] | None = None,
                 source: Mapping[str, str] | None = None) -> DataSchema:
    """Roles and kinds of every column; ``features`` / ``id_columns`` from the config win."""
    if target not in profiles:
        raise InputError(f"data.target: no column {target!r}; columns are: "
                         f"{', '.join(list(profiles)[:10])}")
    listed = set(features) if features else None
    columns = []
    for name, p in profiles.items():
        if name == target:
            columns.append(column_schema(p, TARGET))
            continue
        kind = column_kind(p)
        if id_columns is not None:
            reason = "listed in data.id_columns" if name in id_columns else ""
        else:
            reason = identifier_reason(p, kind)
        if listed is not None:
            if name not in listed:
                role, why = (IDENTIFIER, reason) if reason else (EXCLUDED, "not in data.features")
            else:
                role, why = FEATURE, ""
                if reason:
                    columns.append(replace(column_schema(p, FEATURE), note=(
                        f"identifier-like ({reason}), kept because data.features lists it")))
                    continue
        elif reason:
            role, why = IDENTIFIER, reason
        elif kind == EMPTY:
            role, why = EXCLUDED, "no values: every row is missing"
        else:
            role, why = FEATURE, ""
        columns.append(column_schema(p, role, why))
    if listed is not None:
        unknown = sorted(listed - set(profiles))
        if unknown:
            raise InputError(f"data.features: no column {unknown[0]!r} in the data")
    schema = DataSchema(tuple(columns), target, infer_task(profiles[target], task), rows,
                        dict(source or {}))
    if not schema.features:
        raise InputError(f"data: no feature columns left besides the target {target!r} "
                         f"(identifiers: {', '.join(c.name for c in schema.identifiers) or 'none'})")
    return schema


def check_columns(schema: DataSchema, columns: Sequence[str], key: str, path: Path) -> None:
    """The data file has every column the schema's features and target need."""
    have = set(columns)
    for c in schema.columns:
        if c.role in (FEATURE, TARGET) and c.name not in have:
            raise InputError(f"{key}: {path}: no column {c.name!r} "
                             f"({'the target' if c.role == TARGET else 'a feature'} in the schema)")
