"""Strict parsing of a /predict body: JSON, shape, dtype, finite values, batch size.

Every way a request can be wrong becomes a ``RequestError`` with an HTTP status and
a message safe to send back (it names the position, never echoes long input).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from ci_ml.serve.model import Signature


class RequestError(Exception):
    """A client's request is unacceptable: answered with ``status`` and ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _NonFinite(ValueError):
    pass


def _reject_constant(name: str) -> float:
    # json accepts NaN, Infinity and -Infinity by default; a model input must not.
    raise _NonFinite(name)


# One decoder for all requests: building one per call (what json.loads does when given a
# hook) costs more than decoding a batch-1 body.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def _kind(value: Any) -> str:
    return {bool: "a boolean", str: "a string", dict: "an object", list: "a list",
            type(None): "null"}.get(type(value), type(value).__name__)


def _is_number(value: Any) -> bool:
    t = type(value)
    return t is float or t is int


def parse_json(body: bytes) -> Any:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestError(400, f"body is not UTF-8 (byte {exc.start})") from None
    try:
        return _DECODER.decode(text)
    except _NonFinite as exc:
        raise RequestError(422, f"non-finite number {exc} is not a valid input") from None
    except json.JSONDecodeError as exc:
        raise RequestError(400, f"malformed JSON: {exc.msg} (line {exc.lineno}, column "
                                f"{exc.colno})") from None
    except RecursionError:
        raise RequestError(400, "malformed JSON: nested too deeply") from None
    except ValueError as exc:  # e.g. an integer literal longer than Python's digit limit
        raise RequestError(400, f"malformed JSON: {str(exc)[:80]}") from None


def _flatten(value: Any, shape: tuple[int, ...], out: list[Any], where: str) -> None:
    if not isinstance(value, list):
        raise RequestError(422, f"{where}: expected a list of {shape[0]}, got {_kind(value)}")
    if len(value) != shape[0]:
        raise RequestError(422, f"{where}: expected {shape[0]} values, got {len(value)}")
    if len(shape) == 1:
        for i, v in enumerate(value):
            if not _is_number(v):
                raise RequestError(422, f"{where}[{i}]: expected a number, got {_kind(v)}")
        out.extend(value)
        return
    for i, v in enumerate(value):
        _flatten(v, shape[1:], out, f"{where}[{i}]")


def request_rows(doc: Any, max_batch: int) -> list[Any]:
    """The body's ``inputs`` list, checked: an object with only 'inputs', a non-empty list
    within the batch limit."""
    if not isinstance(doc, dict):
        raise RequestError(422, f"body must be a JSON object with 'inputs', got {_kind(doc)}")
    extra = sorted(k for k in doc if k != "inputs")
    if extra:
        raise RequestError(422, f"{len(extra)} unknown key(s) (expected only 'inputs')")
    inputs = doc.get("inputs")
    if not isinstance(inputs, list):
        raise RequestError(422, "missing key 'inputs'" if "inputs" not in doc
                           else f"'inputs' must be a list of samples, got {_kind(inputs)}")
    if not inputs:
        raise RequestError(422, "'inputs' is empty")
    if len(inputs) > max_batch:
        raise RequestError(413, f"batch of {len(inputs)} samples exceeds the limit of {max_batch}")
    return inputs


def parse_inputs(doc: Any, signature: Signature, max_batch: int) -> np.ndarray:
    """The validated raw features as a (batch, n_features) float64 array."""
    if not isinstance(doc, dict):
        raise RequestError(422, f"body must be a JSON object with 'inputs', got {_kind(doc)}")
    extra = sorted(k for k in doc if k != "inputs")
    if extra:
        # The key itself is not echoed: a response never reflects request text.
        raise RequestError(422, f"{len(extra)} unknown key(s) (expected only 'inputs')")
    if "inputs" not in doc:
        raise RequestError(422, "missing key 'inputs'")
    inputs = doc["inputs"]
    if not isinstance(inputs, list):
        raise RequestError(422, f"'inputs' must be a list of samples, got {_kind(inputs)}")
    if not inputs:
        raise RequestError(422, "'inputs' is empty")
    if len(inputs) > max_batch:
        raise RequestError(413, f"batch of {len(inputs)} samples exceeds the limit of {max_batch}")
    n = signature.n_features
    shape = signature.sample_shape
    flat: list[Any] = []
    for i, sample in enumerate(inputs):
        where = f"inputs[{i}]"
        if isinstance(sample, list) and len(sample) == n and all(map(_is_number, sample)):
            flat.extend(sample)  # the flat form: n feature values
        elif len(shape) > 1 and isinstance(sample, list) and sample and isinstance(sample[0], list):
            _flatten(sample, shape, flat, where)
        elif isinstance(sample, list) and len(sample) == n:
            bad = next(j for j, v in enumerate(sample) if not _is_number(v))
            raise RequestError(422, f"{where}[{bad}]: expected a number, got {_kind(sample[bad])}")
        else:
            got = f"{len(sample)} values" if isinstance(sample, list) else _kind(sample)
            raise RequestError(422, f"{where}: expected {n} numbers or a nested list of shape "
                                    f"{list(shape)}, got {got}")
    try:
        arr = np.asarray(flat, dtype=np.float64).reshape(len(inputs), n)
    except OverflowError:
        raise RequestError(422, "a number is too large to be a model input") from None
    finite = np.isfinite(arr)
    if not finite.all():
        row, col = map(int, np.argwhere(~finite)[0])
        raise RequestError(422, f"inputs[{row}] feature {col}: non-finite value")
    return arr


def check_prepared(x: np.ndarray) -> None:
    """After scaling and the cast to the graph's dtype, values must still be finite."""
    if not np.isfinite(x).all():
        raise RequestError(422, "an input is out of range for the model's number type")

