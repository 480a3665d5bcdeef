"""Request decoding: rows (``/predict``) or tensors (the Open Inference Protocol) in, ONNX feed out.

The HTTP layer never looks inside a request's inputs: it hands the parsed JSON rows, or
the protocol's named tensors, to the model's ``InputDecoder`` and gets back a ``Batch``
(the feed dict for ``InferenceSession.run`` plus the rows as received, for the request
log). A decoder also describes what it accepts, so the OpenAPI document, the protocol's
model metadata and the DAST payloads all come from the same place.

A new input format (tabular rows with named fields and missing values, say) is a new
``InputDecoder`` beside ``tensor.py``, registered in ``ci_ml.serve.decoders.DECODERS``;
when its card also says how to read the graph's outputs, it overrides ``read_outputs``.
The HTTP layer does not change.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

# The Open Inference Protocol's datatypes for the numpy dtypes the server handles.
OIP_DATATYPES: dict[str, str] = {"float32": "FP32", "float64": "FP64", "int64": "INT64",
                                 "int32": "INT32", "bool": "BOOL", "object": "BYTES"}
ONNX_TYPES: dict[str, str] = {"tensor(float)": "float32", "tensor(double)": "float64",
                              "tensor(int64)": "int64", "tensor(string)": "object"}


class RequestError(Exception):
    """A client's request is unacceptable: answered with ``status`` and ``message``.

    The message is safe to send back: it names the position of the problem and never
    echoes request text.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class TensorSpec:
    """One named input or output: numpy dtype name and shape (-1 for the batch axis)."""

    name: str
    dtype: str                     # numpy name: float32, float64, int64, object (strings)
    shape: tuple[int, ...]         # with the batch axis first, -1 when dynamic

    @property
    def datatype(self) -> str:
        """The protocol's name for the dtype (FP32, INT64, BYTES, ...)."""
        return OIP_DATATYPES[self.dtype]

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return self.shape[1:]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True)
class Batch:
    """A decoded request: what the graph is fed, and what the request log records."""

    feed: dict[str, np.ndarray]
    size: int
    rows: list[Any]                # the rows as received (named fields where they were named)


@dataclass(frozen=True)
class Predictions:
    """A batch's answer: class labels and probabilities, or predicted values."""

    labels: list[str] | None = None
    probabilities: np.ndarray | None = None   # (batch, classes), float64
    values: np.ndarray | None = None          # (batch,) or (batch, k), float64

    def rows(self) -> list[dict[str, Any]]:
        """Per row, for the request log."""
        if self.labels is not None and self.probabilities is not None:
            probs = np.round(self.probabilities, 6).tolist()
            return [{"label": lab, "probabilities": p} for lab, p in zip(self.labels, probs,
                                                                          strict=True)]
        assert self.values is not None
        return [{"value": v} for v in self.values.tolist()]


class InputDecoder(ABC):
    """Turns request inputs into the graph's feed; one instance per served model."""

    name: ClassVar[str]

    @abstractmethod
    def protocol_inputs(self) -> tuple[TensorSpec, ...]:
        """The tensors the protocol endpoint takes (names, datatypes, shapes)."""

    @abstractmethod
    def row_schema(self) -> dict[str, Any]:
        """JSON Schema (OpenAPI 3.0 dialect) of one row of ``/predict``'s ``inputs``.

        Everything valid against it must decode: the schema states the bounds."""

    @abstractmethod
    def example_row(self) -> Any:
        """One valid row: the OpenAPI example and DAST's baseline request."""

    @abstractmethod
    def decode_rows(self, rows: Sequence[Any]) -> Batch:
        """``/predict``'s ``inputs`` (already checked to be a non-empty list within the batch
        limit) -> the feed; raises RequestError (422) naming the bad position."""

    @abstractmethod
    def decode_tensors(self, tensors: Mapping[str, np.ndarray]) -> Batch:
        """The protocol's input tensors, by name, already in their declared shape and a
        matching dtype -> the feed; raises RequestError (400) on a missing or unknown name."""

    def read_outputs(self, outputs: Mapping[str, np.ndarray], batch: Batch
                     ) -> Predictions | None:
        """The answer from all of the graph's outputs (name -> array), for a format whose
        card says how to read them (a label output, a target scale); None (the default)
        leaves it to the server: the softmax of the scores output, or its values."""
        return None

    def describe(self) -> dict[str, Any]:
        """Plain facts for the OpenAPI document's ``x-ci-ml`` block (DAST reads them)."""
        return {"decoder": self.name,
                "inputs": [spec.to_json() for spec in self.protocol_inputs()]}
