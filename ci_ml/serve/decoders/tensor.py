"""The tensor decoder: one or several named graph inputs of float, int64 or string values.

``/predict`` rows take three forms:

- a list: the one input's sample, flat (``n`` values) or nested in the input's shape;
- an object keyed by the model card's feature names (one 1-D input with named features);
- an object keyed by input name, each value that input's sample (graphs with several inputs).

When the graph has exactly one float input, the model card's preprocessing applies (raw
values divided by ``scale``, then standardized with ``mean``/``std``), as in training.
Float values must be finite and within ``bound`` (the OpenAPI document states it), so
that preprocessing and the cast to the graph's type can never overflow.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ci_ml.serve.decoders.interface import Batch, InputDecoder, RequestError, TensorSpec

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
FLOAT_MAX = {"float32": float(np.finfo(np.float32).max), "float64": float(np.finfo(np.float64).max)}


@dataclass(frozen=True)
class Preprocessing:
    """The model card's preprocessing of a single float input: ``((x / scale) - mean) / std``."""

    scale: float = 1.0
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    features: tuple[str, ...] = ()


def _kind(value: Any) -> str:
    return {bool: "a boolean", str: "a string", dict: "an object", list: "a list",
            type(None): "null"}.get(type(value), type(value).__name__)


def _is_number(value: Any) -> bool:
    t = type(value)
    return t is float or t is int


def _is_int(value: Any) -> bool:
    return type(value) is int


def _is_str(value: Any) -> bool:
    return type(value) is str


_CHECKS = {"float32": (_is_number, "a number"), "float64": (_is_number, "a number"),
           "int64": (_is_int, "an integer"), "object": (_is_str, "a string")}
# The same checks for a whole list at once: the set of its values' exact types (so a bool,
# a subclass of int, is not a number) is computed in C, a call per value is not.
_TYPES = {"float32": frozenset({float, int}), "float64": frozenset({float, int}),
          "int64": frozenset({int}), "object": frozenset({str})}


def _flatten(value: Any, shape: tuple[int, ...], out: list[Any], where: str,
             check: Any, expected: str, types: frozenset[type], path: tuple[int, ...] = ()
             ) -> None:
    # The position is formatted only for an error message: most requests are valid.
    if not isinstance(value, list):
        raise RequestError(422, f"{_at(where, path)}: expected a list of {shape[0]}, got "
                                f"{_kind(value)}")
    if len(value) != shape[0]:
        raise RequestError(422, f"{_at(where, path)}: expected {shape[0]} values, got "
                                f"{len(value)}")
    if len(shape) == 1:
        if not types.issuperset(map(type, value)):
            i, v = next((i, v) for i, v in enumerate(value) if not check(v))
            raise RequestError(422, f"{_at(where, (*path, i))}: expected {expected}, got "
                                    f"{_kind(v)}")
        out.extend(value)
        return
    for i, v in enumerate(value):
        _flatten(v, shape[1:], out, where, check, expected, types, (*path, i))


def _at(where: str, path: tuple[int, ...]) -> str:
    return where + "".join(f"[{i}]" for i in path)


class TensorDecoder(InputDecoder):
    name: ClassVar[str] = "tensor"

    def __init__(self, inputs: Sequence[TensorSpec], preprocessing: Preprocessing | None = None,
                 *, max_abs: float = 1e12, max_string: int = 4096) -> None:
        self.inputs = tuple(inputs)
        self.by_name = {spec.name: spec for spec in self.inputs}
        single_float = len(self.inputs) == 1 and self.inputs[0].dtype in FLOAT_MAX
        self.pre = preprocessing if single_float and preprocessing else Preprocessing()
        self.max_string = max_string
        self.features = self.pre.features if (
            single_float and len(self.inputs[0].sample_shape) == 1
            and len(self.pre.features) == math.prod(self.inputs[0].sample_shape)) else ()
        n = math.prod(self.inputs[0].sample_shape) if single_float else 0
        self._mean = np.asarray(self.pre.mean, dtype=np.float64) if self.pre.mean else None
        self._std = np.asarray(self.pre.std, dtype=np.float64) if self.pre.std else None
        for label, vec in (("mean", self._mean), ("std", self._std)):
            if vec is not None and vec.size != n:
                raise ValueError(f"'{label}' has {vec.size} values, the model takes {n} features")
        # The largest raw magnitude whose preprocessed value still fits the graph's type.
        self.bounds = {spec.name: self._bound(spec, max_abs) for spec in self.inputs
                       if spec.dtype in FLOAT_MAX}

    def _bound(self, spec: TensorSpec, max_abs: float) -> float:
        limit = FLOAT_MAX[spec.dtype] / 2      # headroom: the cast must never round to inf
        if spec is self.inputs[0] and (self._mean is not None or self.pre.scale != 1.0):
            std = self._std if self._std is not None else np.ones(1)
            mean = self._mean if self._mean is not None else np.zeros(1)
            with np.errstate(over="ignore"):
                fits = self.pre.scale * (limit * std - np.abs(mean))
            limit = float(np.min(fits))
        bound = min(max_abs, limit)
        # A round number in the document: 1e12, not 1000000000000.0003.
        return float(f"{bound:.6g}") if bound < max_abs else bound

    # -- description -------------------------------------------------------------------------
    def protocol_inputs(self) -> tuple[TensorSpec, ...]:
        return self.inputs

    def _value_schema(self, spec: TensorSpec) -> dict[str, Any]:
        if spec.dtype == "object":
            return {"type": "string", "maxLength": self.max_string}
        if spec.dtype == "int64":
            return {"type": "integer", "format": "int64", "minimum": INT64_MIN,
                    "maximum": INT64_MAX}
        bound = self.bounds[spec.name]
        return {"type": "number", "format": "double", "minimum": -bound, "maximum": bound}

    def _sample_schema(self, spec: TensorSpec) -> dict[str, Any]:
        schema = self._value_schema(spec)
        for dim in reversed(spec.sample_shape):
            schema = {"type": "array", "minItems": dim, "maxItems": dim, "items": schema}
        return schema

    def row_schema(self) -> dict[str, Any]:
        if len(self.inputs) > 1:
            return {"type": "object", "additionalProperties": False,
                    "required": [s.name for s in self.inputs],
                    "properties": {s.name: self._sample_schema(s) for s in self.inputs},
                    "description": "One sample: each input's values, by input name"}
        spec = self.inputs[0]
        nested = self._sample_schema(spec)
        n = math.prod(spec.sample_shape)
        forms: list[dict[str, Any]] = [nested]
        if len(spec.sample_shape) > 1:
            forms.append({"type": "array", "minItems": n, "maxItems": n,
                          "items": self._value_schema(spec)})
        if self.features:
            value = self._value_schema(spec)
            forms.append({"type": "object", "additionalProperties": False,
                          "required": list(self.features),
                          "properties": {f: value for f in self.features}})
        if len(forms) == 1:
            return {**nested, "description": "One sample of raw feature values"
                    + (f" ({', '.join(self.features[:4])}, ...)" if self.features else "")}
        return {"oneOf": forms, "description": "One sample: a flat list of raw values, a nested "
                "list in the input's shape" + (", or an object keyed by feature name"
                                               if self.features else "")}

    def example_row(self) -> Any:
        if len(self.inputs) > 1:
            return {s.name: self._example_sample(s) for s in self.inputs}
        spec = self.inputs[0]
        flat = self._example_flat(spec)
        return flat

    def _example_flat(self, spec: TensorSpec) -> list[Any]:
        n = math.prod(spec.sample_shape)
        if spec.dtype == "object":
            return ["a"] * n
        if spec.dtype == "int64":
            return [0] * n
        if spec is self.inputs[0] and self._mean is not None:
            return [round(float(m) * self.pre.scale, 4) for m in self._mean]
        return [0.0] * n

    def _example_sample(self, spec: TensorSpec) -> Any:
        return _nest(self._example_flat(spec), spec.sample_shape)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "features": list(self.features),
                "bounds": dict(self.bounds), "scale": self.pre.scale,
                "standardized": self._mean is not None}

    # -- decoding ----------------------------------------------------------------------------
    def _sample(self, spec: TensorSpec, value: Any, where: str, out: list[Any]) -> None:
        check, expected = _CHECKS[spec.dtype]
        shape = spec.sample_shape
        n = math.prod(shape)
        if not shape:
            if not check(value):
                raise RequestError(422, f"{where}: expected {expected}, got {_kind(value)}")
            out.append(value)
        elif isinstance(value, list) and len(value) == n and \
                _TYPES[spec.dtype].issuperset(map(type, value)):
            out.extend(value)           # the flat form (also the nested form of a 1-D input)
        elif len(shape) > 1 and isinstance(value, list) and value and isinstance(value[0], list):
            _flatten(value, shape, out, where, check, expected, _TYPES[spec.dtype])
        elif isinstance(value, list) and len(value) == n:
            bad = next(j for j, v in enumerate(value) if not check(v))
            raise RequestError(422, f"{where}[{bad}]: expected {expected}, got "
                                    f"{_kind(value[bad])}")
        else:
            got = f"{len(value)} values" if isinstance(value, list) else _kind(value)
            form = (f"{n} values" if len(shape) == 1 else
                    f"{n} values or a nested list of shape {list(shape)}")
            raise RequestError(422, f"{where}: expected {form}, got {got}")

    def _named(self, row: Mapping[str, Any], names: Sequence[str], where: str) -> None:
        if len(row) != len(names) or any(k not in row for k in names):
            missing = [k for k in names if k not in row]
            if missing:
                raise RequestError(422, f"{where}: missing field '{missing[0]}'"
                                        + (f" and {len(missing) - 1} more" if len(missing) > 1
                                           else ""))
            # An unknown key is never echoed: a response does not reflect request text.
            raise RequestError(422, f"{where}: {len(row) - len(names)} unknown field(s)")

    def decode_rows(self, rows: Sequence[Any]) -> Batch:
        values: dict[str, list[Any]] = {spec.name: [] for spec in self.inputs}
        single = self.inputs[0] if len(self.inputs) == 1 else None
        for i, row in enumerate(rows):
            where = f"inputs[{i}]"
            if single is not None and not isinstance(row, dict):
                self._sample(single, row, where, values[single.name])
            elif isinstance(row, dict) and single is not None and self.features:
                self._named(row, self.features, where)
                self._sample(single, [row[f] for f in self.features], where, values[single.name])
            elif isinstance(row, dict) and single is None:
                self._named(row, [s.name for s in self.inputs], where)
                for spec in self.inputs:
                    self._sample(spec, row[spec.name], f"{where}.{spec.name}", values[spec.name])
            else:
                want = ("an object keyed by input name" if single is None else
                        "a list of values" + (" or an object keyed by feature name"
                                              if self.features else ""))
                raise RequestError(422, f"{where}: expected {want}, got {_kind(row)}")
        arrays = {}
        for spec in self.inputs:
            arrays[spec.name] = self._array(spec, values[spec.name], len(rows), "inputs")
        return Batch(feed=self._prepare(arrays), size=len(rows), rows=list(rows))

    def decode_tensors(self, tensors: Mapping[str, np.ndarray]) -> Batch:
        unknown = [name for name in tensors if name not in self.by_name]
        if unknown:
            raise RequestError(400, f"{len(unknown)} unknown input tensor(s); the model takes "
                                    + ", ".join(self.by_name))
        missing = [s.name for s in self.inputs if s.name not in tensors]
        if missing:
            raise RequestError(400, f"input tensor '{missing[0]}' is missing")
        sizes = {int(tensors[s.name].shape[0]) if tensors[s.name].ndim else -1
                 for s in self.inputs}
        if len(sizes) != 1 or -1 in sizes:
            raise RequestError(400, "input tensors disagree on the batch size")
        size = sizes.pop()
        arrays: dict[str, np.ndarray] = {}
        for spec in self.inputs:
            arr = tensors[spec.name]
            if tuple(arr.shape[1:]) != spec.sample_shape:
                raise RequestError(400, f"input '{spec.name}': shape {list(arr.shape)} does not "
                                        f"match {list(spec.shape)}")
            if spec.dtype == "object":
                arrays[spec.name] = self._array(spec, arr.reshape(-1).tolist(), size, spec.name)
            else:
                arrays[spec.name] = self._checked(spec, arr.reshape(size, -1), spec.name)
        rows: list[Any]
        if len(self.inputs) == 1:
            rows = arrays[self.inputs[0].name].tolist()
        else:
            rows = [{name: arrays[name][i].tolist() for name in arrays} for i in range(size)]
        return Batch(feed=self._prepare(arrays), size=size, rows=rows)

    def _array(self, spec: TensorSpec, flat: list[Any], size: int, where: str) -> np.ndarray:
        if spec.dtype == "object":
            for i, s in enumerate(flat):
                if type(s) is not str:
                    raise RequestError(422, f"{where}: value {i} is not a string")
                if len(s) > self.max_string:
                    raise RequestError(422, f"{where}: value {i} is longer than "
                                            f"{self.max_string} characters")
            return np.asarray(flat, dtype=object).reshape(size, -1)
        try:
            arr = np.asarray(flat, dtype=np.float64 if spec.dtype in FLOAT_MAX else np.int64)
        except OverflowError:
            raise RequestError(422, f"{where}: an integer is out of the int64 range") from None
        return self._checked(spec, arr.reshape(size, -1), where)

    def _checked(self, spec: TensorSpec, arr: np.ndarray, where: str) -> np.ndarray:
        if spec.dtype == "int64":
            return arr.astype(np.int64, copy=False)
        arr = arr.astype(np.float64, copy=False)
        bound = self.bounds[spec.name]
        ok = np.abs(arr) <= bound          # False for NaN too
        if not ok.all():
            row, col = map(int, np.argwhere(~ok)[0])
            value = arr[row, col]
            what = "non-finite value" if not np.isfinite(value) else f"beyond ±{bound:g}"
            raise RequestError(422, f"{where}[{row}] value {col}: {what}")
        return arr

    def _prepare(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = {}
        for spec in self.inputs:
            x = arrays[spec.name]
            if spec is self.inputs[0] and spec.dtype in FLOAT_MAX:
                if self.pre.scale != 1.0:
                    x = x / self.pre.scale
                if self._mean is not None and self._std is not None:
                    x = (x - self._mean) / self._std
            if spec.dtype != "object":
                x = x.astype(spec.dtype, copy=False)
            feed[spec.name] = x.reshape((x.shape[0], *spec.sample_shape))
        return feed


def _nest(flat: list[Any], shape: tuple[int, ...]) -> Any:
    if not shape:
        return flat[0]
    if len(shape) == 1:
        return flat
    step = len(flat) // shape[0]
    return [_nest(flat[i * step:(i + 1) * step], shape[1:]) for i in range(shape[0])]
