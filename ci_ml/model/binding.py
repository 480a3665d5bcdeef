"""Which data fields feed which inputs of a team's own ONNX model, and how to read its answer.

A model made by ``train.command`` (skl2onnx, onnxmltools, torch.onnx...) declares its
inputs by name and type. ci-ml can feed it two ways, and nothing else:

- one input per feature column, named like the column (what skl2onnx pipelines with
  a ColumnTransformer take): strings for categories, floats or integers for numbers,
  shape ``[batch, 1]`` or ``[batch]``;
- one numeric input ``[batch, n]`` holding the numeric feature columns in the data's
  column order (missing values as NaN).

Anything else is a model with the wrong inputs: an ``InputError`` that says what the
model takes and what ci-ml can give it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ci_ml.data.schema import CATEGORY, NUMBER, ColumnSchema
from ci_ml.errors import InputError
from ci_ml.model.card import CLASSIFICATION, InputBinding, OutputBinding
from ci_ml.model.inference import ORT_TYPES

_NUMERIC = ("float32", "float64", "float16", "int64", "int32")


def _describe(inputs: Sequence[Any]) -> str:
    return ", ".join(f"{i.name} {i.type} {list(i.shape)}" for i in inputs)


def infer_bindings(path: Path, graph_inputs: Sequence[Any],
                   features: Sequence[ColumnSchema]) -> tuple[InputBinding, ...]:
    by_name = {c.name: c for c in features}
    numeric = [c.name for c in features if c.kind == NUMBER]
    bindings = []
    unmatched = []
    for inp in graph_inputs:
        dtype = ORT_TYPES.get(inp.type)
        if dtype is None:
            raise InputError(f"{path}: input {inp.name!r} has type {inp.type}, which ci-ml "
                             "cannot feed (it feeds strings, numbers and booleans)")
        column = by_name.get(inp.name)
        if column is None:
            unmatched.append((inp, dtype))
            continue
        if len(inp.shape) > 2 or (len(inp.shape) == 2 and inp.shape[1] not in (1, None)
                                  and not isinstance(inp.shape[1], str)):
            raise InputError(f"{path}: input {inp.name!r} has shape {list(inp.shape)}; a "
                             "per-column input takes [batch, 1] or [batch]")
        if column.kind == CATEGORY and dtype in _NUMERIC:
            raise InputError(f"{path}: input {inp.name!r} takes {dtype}, but column "
                             f"{inp.name!r} holds categories (strings)")
        bindings.append(InputBinding(inp.name, dtype, (inp.name,), False, (1,)))
    if unmatched:
        if len(unmatched) == 1 and not bindings:
            inp, dtype = unmatched[0]
            width = inp.shape[-1] if len(inp.shape) == 2 else None
            if dtype in _NUMERIC and (width == len(numeric) or not isinstance(width, int)) \
                    and numeric and len(numeric) == len(features):
                return (InputBinding(inp.name, dtype, tuple(numeric), False, (len(numeric),)),)
            if dtype in _NUMERIC and width == len(numeric) and numeric:
                return (InputBinding(inp.name, dtype, tuple(numeric), False, (len(numeric),)),)
        names = ", ".join(repr(i.name) for i, _ in unmatched[:5])
        raise InputError(
            f"{path}: the model's inputs do not fit the data: {names} "
            f"({_describe([i for i, _ in unmatched][:5])}) "
            f"{'is not a feature column' if len(unmatched) == 1 else 'are not feature columns'}"
            f"; ci-ml feeds one input per feature column named like it ("
            f"{', '.join(c.name for c in features[:4])}{', ...' if len(features) > 4 else ''}), "
            f"or one numeric input of width {len(numeric)} (the numeric features in column "
            "order)")
    return tuple(bindings)


def infer_outputs(path: Path, graph_outputs: Sequence[Any], task: str,
                  sample: Sequence[Any]) -> OutputBinding:
    """Pick the scores / label / value outputs; ``sample`` is one run's outputs."""
    if not graph_outputs:
        raise InputError(f"{path}: the model has no outputs")
    if task != CLASSIFICATION:
        for out, value in zip(graph_outputs, sample, strict=True):
            if out.type in ("tensor(float)", "tensor(double)", "tensor(float16)"):
                arr = np.asarray(value)
                if arr.ndim == 1 or (arr.ndim == 2 and arr.shape[1] == 1):
                    return OutputBinding(out.name, "value", None)
        raise InputError(f"{path}: a regression model needs a float output of shape [batch] or "
                         f"[batch, 1]; it has {_describe(graph_outputs)}")
    label = scores = None
    kind = "logits"
    for out, value in zip(graph_outputs, sample, strict=True):
        if out.type.startswith("seq(map(") and scores is None:
            scores, kind = out.name, "zipmap"
        elif out.type in ("tensor(string)", "tensor(int64)", "tensor(int32)") and label is None:
            label = out.name
        elif out.type in ("tensor(float)", "tensor(double)") and scores is None:
            arr = np.asarray(value, dtype=np.float64)
            if arr.ndim == 2 and arr.shape[1] > 1:
                scores = out.name
                rows_sum = arr.sum(axis=1)
                probabilities = bool(np.all(arr >= -1e-6) and np.allclose(rows_sum, 1.0, atol=1e-3))
                kind = "probabilities" if probabilities else "logits"
    if scores is None and label is None:
        raise InputError(f"{path}: a classifier needs a label output or a [batch, classes] "
                         f"score output; it has {_describe(graph_outputs)}")
    return OutputBinding(scores, kind, label)


def class_order(labels: Sequence[str], probabilities: np.ndarray,
                classes: Sequence[str]) -> tuple[str, ...]:
    """The classes in the order of the model's score columns, checked against its labels.

    Scores without names are taken in the data's sorted class order (scikit-learn's
    ``classes_``); when the model also outputs labels, each score column must agree with
    the label it predicts, and a different order is adopted if the labels say so.
    """
    argmax = probabilities.argmax(axis=1)
    order = list(classes)
    for j in range(probabilities.shape[1]):
        chosen = [labels[int(i)] for i in np.flatnonzero(argmax == j)]
        if chosen:
            top = max(set(chosen), key=chosen.count)
            order[j] = top
    if sorted(order) == sorted(classes) and len(set(order)) == len(order):
        return tuple(order)
    return tuple(classes)
