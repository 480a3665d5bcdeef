"""The model card (``model.json``): what a model takes, what it answers, how it was made.

Torch-free: the server, the gate, the registry and ``ci-ml evaluate`` on an ONNX file
read it without importing torch. Format ``ci-ml/2`` (documented in docs/train.md):

- ``task`` (classification | regression), ``target``, ``classes``;
- ``fields``: the raw input fields a request carries (name, kind, nullable,
  categories, range);
- ``inputs``: each ONNX graph input and what fills it: either ci-ml's encoded matrix
  (``encoded: true``, built by ``preprocessing``) or raw fields (a graph that takes
  raw values itself, as skl2onnx pipelines do: one input per field, or one float
  matrix of the numeric fields);
- ``outputs``: which graph output holds the scores (logits, probabilities, a ZipMap,
  or the regression value) and which the predicted label, if any;
- ``preprocessing``: ci-ml's fitted encoders (``ci_ml.data.features``), or null;
- ``target_scale``: a regression model's output is ``mean + output * std``;
- ``spec``: how to rebuild a zoo model in PyTorch (null for a team's own ONNX);
- ``trainer``: ``ci-ml`` (the zoo) or ``command`` (``train.command``);
- the v1 keys ``features``, ``scale``, ``mean``, ``std`` for readers of ``ci-ml/1``.

A ``ci-ml/1`` card (numeric features only) still reads: it becomes a v2 card whose
preprocessing divides by ``scale`` and z-scores with ``mean``/``std``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ci_ml.data.features import NUMBER, FieldEncoder, Preprocessor
from ci_ml.errors import InputError

FORMAT = "ci-ml/2"
FORMAT_V1 = "ci-ml/1"
CARD = "model.json"
WEIGHTS = "model.safetensors"
REFERENCE = "reference-profile.json"
CLASSIFICATION, REGRESSION = "classification", "regression"
TRAINER_ZOO, TRAINER_COMMAND = "ci-ml", "command"
DTYPES = ("float32", "float64", "float16", "int64", "int32", "string", "bool")
SCORE_KINDS = ("logits", "probabilities", "zipmap", "value")


@dataclass(frozen=True)
class Field:
    """A raw input field as a request carries it."""

    name: str
    kind: str                              # number | category | datetime
    nullable: bool = True
    categories: tuple[str, ...] = ()
    low: float | None = None
    high: float | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "kind": self.kind, "nullable": self.nullable}
        if self.categories:
            out["categories"] = list(self.categories)
        if self.low is not None:
            out["min"], out["max"] = self.low, self.high
        return out

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Field:
        low, high = d.get("min"), d.get("max")
        return cls(str(d["name"]), str(d["kind"]), bool(d.get("nullable", True)),
                   tuple(str(c) for c in d.get("categories") or ()),
                   None if low is None else float(low), None if high is None else float(high))


@dataclass(frozen=True)
class InputBinding:
    """One ONNX graph input and the fields that fill it."""

    name: str
    dtype: str
    fields: tuple[str, ...]
    encoded: bool                          # True: ci-ml's preprocessing builds it
    shape: tuple[int, ...] = ()            # one sample's shape (without the batch axis)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "fields": list(self.fields),
                "encoded": self.encoded, "shape": list(self.shape)}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> InputBinding:
        dtype = str(d["dtype"])
        if dtype not in DTYPES:
            raise ValueError(f"input {d.get('name')!r}: unknown dtype {dtype!r}")
        return cls(str(d["name"]), dtype, tuple(str(f) for f in d["fields"]),
                   bool(d.get("encoded", False)), tuple(int(v) for v in d.get("shape") or ()))


@dataclass(frozen=True)
class OutputBinding:
    scores: str | None = None              # graph output with scores or the value
    kind: str = "logits"                   # logits | probabilities | zipmap | value
    label: str | None = None               # graph output with the predicted labels

    def to_json(self) -> dict[str, Any]:
        return {"scores": self.scores, "kind": self.kind, "label": self.label}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> OutputBinding:
        kind = str(d.get("kind", "logits"))
        if kind not in SCORE_KINDS:
            raise ValueError(f"outputs.kind {kind!r} is not one of {', '.join(SCORE_KINDS)}")
        scores, label = d.get("scores"), d.get("label")
        return cls(None if scores is None else str(scores), kind,
                   None if label is None else str(label))


@dataclass(frozen=True)
class ModelCard:
    task: str
    classes: tuple[str, ...]
    fields: tuple[Field, ...]
    inputs: tuple[InputBinding, ...]
    outputs: OutputBinding = field(default_factory=OutputBinding)
    preprocessing: Preprocessor | None = None
    target: str = ""
    target_scale: tuple[float, float] | None = None
    spec_json: Mapping[str, Any] | None = None
    trainer: str = TRAINER_ZOO
    reference: str | None = REFERENCE
    scale: float = 1.0                     # v1 view of an all-numeric zoo model
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    @property
    def features(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    @property
    def input_shape(self) -> tuple[int, ...]:
        encoded = [b for b in self.inputs if b.encoded]
        return encoded[0].shape if encoded else ()

    @property
    def tabular(self) -> bool:
        """More than plain numbers in one matrix: the server takes raw rows for it."""
        return (self.task != CLASSIFICATION or len(self.inputs) != 1
                or not self.inputs[0].encoded
                or any(f.kind != NUMBER or f.nullable for f in self.fields))

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "trainer": self.trainer, "task": self.task, "target": self.target,
            # The server's request decoder (ci_ml.serve.decoders): raw rows, or tensors.
            "input_format": "rows" if self.tabular else "tensor",
            "classes": list(self.classes),
            "fields": [f.to_json() for f in self.fields],
            "inputs": [b.to_json() for b in self.inputs],
            "outputs": self.outputs.to_json(),
            "preprocessing": self.preprocessing.to_json() if self.preprocessing else None,
            "target_scale": ({"mean": self.target_scale[0], "std": self.target_scale[1]}
                             if self.target_scale else None),
            "spec": dict(self.spec_json) if self.spec_json is not None else None,
            "reference": self.reference,
            # v1 keys (readers of ci-ml/1): raw feature names, scale, z-score.
            "features": list(self.features), "scale": self.scale,
            "mean": list(self.mean) if self.mean else None,
            "std": list(self.std) if self.std else None,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ModelCard:
        fmt = data.get("format", FORMAT_V1)
        if fmt == FORMAT_V1:
            return _from_v1(data)
        if fmt != FORMAT:
            raise ValueError(f"unknown card format {fmt!r} (this ci-ml reads {FORMAT} and "
                             f"{FORMAT_V1})")
        task = str(data["task"])
        if task not in (CLASSIFICATION, REGRESSION):
            raise ValueError(f"task {task!r} is not classification or regression")
        prep = data.get("preprocessing")
        ts = data.get("target_scale")
        mean, std = data.get("mean"), data.get("std")
        card = cls(
            task=task, classes=tuple(str(c) for c in data.get("classes") or ()),
            fields=tuple(Field.from_json(f) for f in data["fields"]),
            inputs=tuple(InputBinding.from_json(b) for b in data["inputs"]),
            outputs=OutputBinding.from_json(data.get("outputs") or {}),
            preprocessing=Preprocessor.from_json(prep) if prep else None,
            target=str(data.get("target", "")),
            target_scale=(float(ts["mean"]), float(ts["std"])) if ts else None,
            spec_json=dict(data["spec"]) if data.get("spec") else None,
            trainer=str(data.get("trainer", TRAINER_ZOO)),
            reference=data.get("reference"), scale=float(data.get("scale", 1.0)),
            mean=tuple(float(v) for v in mean) if mean else None,
            std=tuple(float(v) for v in std) if std else None)
        card.validate()
        return card

    def validate(self) -> None:
        if self.task == CLASSIFICATION and len(self.classes) < 2:
            raise ValueError("a classification model needs at least two classes")
        if not self.inputs:
            raise ValueError("'inputs' is empty")
        names = {f.name for f in self.fields}
        for b in self.inputs:
            unknown = [f for f in b.fields if f not in names]
            if unknown:
                raise ValueError(f"input {b.name!r} uses field {unknown[0]!r}, not in 'fields'")
            if b.encoded and self.preprocessing is None:
                raise ValueError(f"input {b.name!r} is encoded but 'preprocessing' is null")
        if self.preprocessing is not None:
            missing = set(self.preprocessing.field_names) - names
            if missing:
                raise ValueError(f"preprocessing uses field {sorted(missing)[0]!r}, "
                                 "not in 'fields'")
            width = self.preprocessing.width
            for b in self.inputs:
                if b.encoded and b.shape and math.prod(b.shape) != width:
                    raise ValueError(f"input {b.name!r} has shape {list(b.shape)}, but the "
                                     f"preprocessing makes {width} values")
        if self.target_scale is not None and not (math.isfinite(self.target_scale[1])
                                                  and self.target_scale[1] > 0):
            raise ValueError("target_scale.std must be a positive number")


def numeric_card(spec_json: Mapping[str, Any] | None, classes: Sequence[str],
                 features: Sequence[str], scale: float = 1.0,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 impute: float = 0.0) -> ModelCard:
    """A zoo classifier over numeric features only: the ci-ml/1 model, as a v2 card."""
    shape = tuple(int(v) for v in (spec_json or {}).get("input_shape") or ())
    n = math.prod(shape) if shape else len(features)
    names = tuple(str(f) for f in features) or tuple(f"x{i}" for i in range(n))
    encoders = tuple(
        FieldEncoder(name, NUMBER, impute=impute, scale=scale,
                     mean=float(mean[i]) if mean else 0.0, std=float(std[i]) if std else 1.0)
        for i, name in enumerate(names))
    card = ModelCard(
        task=CLASSIFICATION, classes=tuple(str(c) for c in classes),
        fields=tuple(Field(n_, NUMBER, nullable=False) for n_ in names),
        inputs=(InputBinding("input", "float32", names, True, shape or (len(names),)),),
        preprocessing=Preprocessor(encoders),
        spec_json=dict(spec_json) if spec_json else None, scale=scale,
        mean=tuple(float(v) for v in mean) if mean else None,
        std=tuple(float(v) for v in std) if std else None, reference=None)
    card.validate()
    return card


def _from_v1(data: Mapping[str, Any]) -> ModelCard:
    # v1 filled a missing value with 0 after scaling: the same, as an imputation of 0.
    return numeric_card(data.get("spec"), data["classes"], data.get("features") or (),
                        float(data.get("scale", 1.0)), data.get("mean"), data.get("std"))


def read_card(path: Path) -> ModelCard:
    """``path`` is model.json or a directory holding it; InputError when unusable."""
    card_path = path / CARD if path.is_dir() else path
    try:
        data = json.loads(card_path.read_text("utf-8"))
    except FileNotFoundError:
        raise InputError(f"{card_path}: not found (a model needs its card {CARD} beside "
                         "model.onnx)") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"{card_path}: not a readable JSON model card ({exc})") from None
    if not isinstance(data, dict):
        raise InputError(f"{card_path}: not a valid model card (expected a JSON object)")
    try:
        return ModelCard.from_json(data)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InputError(f"{card_path}: not a valid model card ({exc!s})") from None


def fields_from_schema(columns: Sequence[Any]) -> tuple[Field, ...]:
    """Card fields from data-schema columns (``ci_ml.data.schema.ColumnSchema``)."""
    return tuple(Field(c.name, c.kind, c.nullable, tuple(c.categories) if c.kind == "category"
                       else (), c.low, c.high) for c in columns)
