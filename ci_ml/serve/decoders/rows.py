"""Raw rows for a tabular model (card format ci-ml/2, ``input_format: rows``).

Rows are objects of named fields or lists in the card's field order, with strings,
numbers and null; they become the graph's feed through ``ci_ml.model.inference``,
the one raw-row path training, evaluation and ``ci-ml evaluate`` use, so a served
model answers a row exactly as the in-process model does. The graph's outputs are
read by the same module (label outputs, probabilities, a regression target's scale).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ci_ml.data.features import InvalidValue
from ci_ml.errors import InputError
from ci_ml.model.card import ModelCard
from ci_ml.model.inference import OnnxModel, RowError, columns_from_rows, decode
from ci_ml.serve.decoders.interface import (
    Batch,
    InputDecoder,
    Predictions,
    RequestError,
    TensorSpec,
)

# numpy dtype names of TensorSpec -> the ONNX type strings the feed builder reads.
_ONNX = {"float32": "tensor(float)", "float64": "tensor(double)", "int64": "tensor(int64)",
         "int32": "tensor(int32)", "object": "tensor(string)", "bool": "tensor(bool)"}


@dataclass(frozen=True)
class _Arg:
    name: str
    type: str
    shape: list[Any]


class _Graph:
    """The graph's signature as the server read it, in the shape of a session's."""

    def __init__(self, inputs: Sequence[TensorSpec], card: ModelCard) -> None:
        self._inputs = [_Arg(s.name, _ONNX.get(s.dtype, s.dtype),
                             [None if d < 0 else d for d in s.shape]) for s in inputs]
        names = [n for n in (card.outputs.scores, card.outputs.label) if n]
        self._outputs = [_Arg(n, "", []) for n in names] or [_Arg("output", "", [])]

    def get_inputs(self) -> list[_Arg]:
        return self._inputs

    def get_outputs(self) -> list[_Arg]:
        return self._outputs


class RowsDecoder(InputDecoder):
    name = "rows"

    def __init__(self, card: ModelCard, inputs: Sequence[TensorSpec], max_string: int) -> None:
        self.card = card
        self.inputs = tuple(inputs)
        self.max_string = max_string
        # The feed builder of ci_ml.model.inference, over the served graph's signature.
        self.model = OnnxModel(Path("model.onnx"), card, session=_Graph(inputs, card))

    def protocol_inputs(self) -> tuple[TensorSpec, ...]:
        return self.inputs

    def row_schema(self) -> dict[str, Any]:
        props: dict[str, Any] = {}
        for f in self.card.fields:
            if f.kind == "category":
                schema: dict[str, Any] = {"type": "string", "maxLength": self.max_string}
                if f.categories:
                    schema["example"] = f.categories[0]
            elif f.kind == "datetime":
                schema = {"type": "string", "format": "date-time", "maxLength": 64}
            else:
                schema = {"type": "number", "format": "double"}
                if f.low is not None:
                    schema["example"] = f.low
            schema["nullable"] = True  # missing: imputed (numbers), all zeros (categories)
            props[f.name] = schema
        n = len(self.card.fields)
        return {"oneOf": [{"type": "object", "additionalProperties": False,
                           "properties": props},
                          {"type": "array", "minItems": n, "maxItems": n,
                           "items": {"type": "string", "nullable": True},
                           "description": "the values in field order"}]}

    def example_row(self) -> Any:
        props = self.row_schema()["oneOf"][0]["properties"]
        return {name: p.get("example") for name, p in props.items()}

    def decode_rows(self, rows: Sequence[Any]) -> Batch:
        try:
            columns = columns_from_rows(rows, self.model.fields)
            for name, values in columns.items():
                if any(isinstance(v, str) and len(v) > self.max_string for v in values):
                    raise RowError(f"a value of field {self.model.fields.index(name)} is longer "
                                   f"than {self.max_string} characters")
            feed, _ = self.model.feed(columns, len(rows), strict=True)
        except RowError as exc:
            raise RequestError(422, exc.message) from None
        except InvalidValue as exc:
            index = self.model.fields.index(exc.field) if exc.field in self.model.fields else -1
            raise RequestError(422, f"inputs[{exc.row}] field {index}: {exc.reason}") from None
        return Batch(feed, len(rows), list(rows))

    def decode_tensors(self, tensors: Mapping[str, np.ndarray]) -> Batch:
        names = {s.name for s in self.inputs}
        if set(tensors) != names:
            raise RequestError(400, f"the model takes the tensors {', '.join(sorted(names))}")
        size = len(next(iter(tensors.values())))
        return Batch({k: np.asarray(v) for k, v in tensors.items()}, size, [])

    def read_outputs(self, outputs: Mapping[str, np.ndarray], batch: Batch
                     ) -> Predictions | None:
        try:
            pred = decode(self.card, outputs, batch.size, None, "the model")
        except InputError:
            raise RequestError(422, "the model cannot answer this input") from None
        if pred.values is not None:
            return Predictions(values=pred.values)
        probs = pred.probabilities
        if probs is None:  # a label-only classifier: certainty of its own label
            index = {c: i for i, c in enumerate(self.card.classes)}
            probs = np.zeros((batch.size, len(self.card.classes)))
            for i, label in enumerate(pred.labels):
                if label in index:
                    probs[i, index[label]] = 1.0
        return Predictions(labels=list(pred.labels), probabilities=probs)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "fields": [f.to_json() for f in self.card.fields],
                "task": self.card.task}


def rows_decoder(card: Mapping[str, Any], inputs: Sequence[TensorSpec],
                 max_string: int) -> RowsDecoder:
    try:
        parsed = ModelCard.from_json(card)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"not a valid ci-ml/2 card ({exc})") from None
    return RowsDecoder(parsed, inputs, max_string)
