"""The Open Inference Protocol (KServe v2, REST): request parsing and response building.

Tensors travel as JSON (``data`` flat or nested, row-major) or, with the binary tensor
extension Triton's clients use by default, as raw little-endian bytes after a JSON header
whose length is in ``Inference-Header-Content-Length``. Errors are the protocol's
``{"error": "<message>"}`` with an HTTP status.

The input tensors are the graph's inputs by name (``GET /v2/models/{name}`` lists them);
values are raw, as in ``/predict``: the model card's preprocessing is applied here too.
The outputs are ``predictions`` (class labels as BYTES, or values) and, for classifiers,
``probabilities``.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ci_ml.serve.decoders.interface import Predictions, RequestError, TensorSpec
from ci_ml.serve.model import ServedModel
from ci_ml.serve.validation import parse_json

PROTOCOL_VERSION = "2"
HEADER_LENGTH = "inference-header-content-length"
# Datatype -> (numpy dtype, item size in the binary extension, the JSON element check).
NUMERIC = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64, "INT32": np.int32,
           "INT16": np.int16, "INT8": np.int8, "UINT8": np.uint8, "UINT16": np.uint16,
           "UINT32": np.uint32, "UINT64": np.uint64, "FP16": np.float16, "BOOL": np.bool_}


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool


@dataclass(frozen=True)
class InferRequest:
    id: str | None
    tensors: dict[str, np.ndarray]
    outputs: tuple[RequestedOutput, ...]     # empty: all outputs
    binary_default: bool


def _kind(value: Any) -> str:
    return type(value).__name__


def _flat(data: Any, where: str) -> list[Any]:
    """Row-major elements of a flat or nested JSON array."""
    if not isinstance(data, list):
        raise RequestError(400, f"{where}: 'data' must be a list")
    if not data or not isinstance(data[0], list):
        return data
    out: list[Any] = []
    stack = [data]
    while stack:
        node = stack.pop()
        if isinstance(node, list) and node and isinstance(node[0], list):
            stack.extend(reversed(node))
        elif isinstance(node, list):
            out.extend(node)
        else:
            raise RequestError(400, f"{where}: ragged nested 'data'")
    return out


def _bytes_elements(raw: bytes, count: int, where: str) -> list[str]:
    items, pos = [], 0
    for _ in range(count):
        if pos + 4 > len(raw):
            raise RequestError(400, f"{where}: binary BYTES data is truncated")
        (size,) = struct.unpack_from("<I", raw, pos)
        pos += 4
        if pos + size > len(raw):
            raise RequestError(400, f"{where}: binary BYTES data is truncated")
        try:
            items.append(raw[pos:pos + size].decode("utf-8"))
        except UnicodeDecodeError:
            raise RequestError(400, f"{where}: BYTES element is not UTF-8") from None
        pos += size
    if pos != len(raw):
        raise RequestError(400, f"{where}: binary data holds more than the shape says")
    return items


def _tensor(item: Any, index: int, spec: Mapping[str, TensorSpec], binary: memoryview | None,
            offset: int, max_batch: int) -> tuple[str, np.ndarray, int]:
    where = f"inputs[{index}]"
    if not isinstance(item, dict):
        raise RequestError(400, f"{where}: expected an object")
    name, shape, datatype = item.get("name"), item.get("shape"), item.get("datatype")
    if not isinstance(name, str) or name not in spec:
        raise RequestError(400, f"{where}: unknown input name; the model takes "
                                + ", ".join(spec))
    where = f"input '{name}'"
    if not (isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape)):
        raise RequestError(400, f"{where}: 'shape' must be a list of non-negative integers")
    want = spec[name]
    if datatype != want.datatype:
        raise RequestError(400, f"{where}: datatype must be {want.datatype}")
    if len(shape) != len(want.shape) or tuple(shape[1:]) != want.sample_shape:
        raise RequestError(400, f"{where}: shape must be {list(want.shape)} (-1: any batch)")
    if shape[0] < 1:
        raise RequestError(400, f"{where}: empty batch")
    if shape[0] > max_batch:
        raise RequestError(413, f"{where}: batch of {shape[0]} exceeds the limit of {max_batch}")
    count = math.prod(shape)
    params = item.get("parameters") or {}
    if not isinstance(params, dict):
        raise RequestError(400, f"{where}: 'parameters' must be an object")
    size = params.get("binary_data_size")
    if size is not None:
        if binary is None or type(size) is not int or size < 0 or offset + size > len(binary):
            raise RequestError(400, f"{where}: binary_data_size does not match the body")
        raw = bytes(binary[offset:offset + size])
        offset += size
        if datatype == "BYTES":
            arr = np.asarray(_bytes_elements(raw, count, where), dtype=object)
        else:
            dtype = np.dtype(NUMERIC[datatype]).newbyteorder("<")
            if size != count * dtype.itemsize:
                raise RequestError(400, f"{where}: {size} bytes of data for {count} elements")
            arr = np.frombuffer(raw, dtype=dtype).astype(NUMERIC[datatype])
    else:
        if "data" not in item:
            raise RequestError(400, f"{where}: no 'data' and no binary_data_size")
        elements = _flat(item["data"], where)
        if len(elements) != count:
            raise RequestError(400, f"{where}: {len(elements)} elements for shape {shape}")
        arr = _elements(elements, datatype, where)
    return name, arr.reshape(shape), offset


def _elements(elements: list[Any], datatype: str, where: str) -> np.ndarray:
    if datatype == "BYTES":
        if not all(type(v) is str for v in elements):
            raise RequestError(400, f"{where}: BYTES elements must be strings")
        return np.asarray(elements, dtype=object)
    if datatype in ("FP32", "FP64", "FP16"):
        ok = all(type(v) is float or type(v) is int for v in elements)
    elif datatype == "BOOL":
        ok = all(type(v) is bool for v in elements)
    else:
        ok = all(type(v) is int for v in elements)
    if not ok:
        raise RequestError(400, f"{where}: elements must all be {datatype} values")
    try:
        return np.asarray(elements, dtype=np.float64 if datatype.startswith("FP")
                          else NUMERIC[datatype])
    except OverflowError:
        raise RequestError(400, f"{where}: an element is out of range for {datatype}") from None


def parse_infer(body: bytes, header_length: str | None, inputs: Sequence[TensorSpec],
                max_batch: int) -> InferRequest:
    binary: memoryview | None = None
    if header_length is not None:
        try:
            n = int(header_length)
        except ValueError:
            n = -1
        if not 0 <= n <= len(body):
            raise RequestError(400, "Inference-Header-Content-Length does not fit the body")
        binary = memoryview(body)[n:]
        body = body[:n]
    doc = parse_json(body)
    if not isinstance(doc, dict):
        raise RequestError(400, "the inference request must be a JSON object")
    items = doc.get("inputs")
    if not isinstance(items, list) or not items:
        raise RequestError(400, "'inputs' must be a non-empty list of tensors")
    spec = {s.name: s for s in inputs}
    tensors: dict[str, np.ndarray] = {}
    offset = 0
    for i, item in enumerate(items):
        name, arr, offset = _tensor(item, i, spec, binary, offset, max_batch)
        if name in tensors:
            raise RequestError(400, f"input '{name}' is given twice")
        tensors[name] = arr
    if binary is not None and offset != len(binary):
        raise RequestError(400, "the body holds binary data that no input claims")
    params = doc.get("parameters") or {}
    if not isinstance(params, dict):
        raise RequestError(400, "'parameters' must be an object")
    outputs = []
    for j, out in enumerate(doc.get("outputs") or []):
        if not isinstance(out, dict) or not isinstance(out.get("name"), str):
            raise RequestError(400, f"outputs[{j}]: expected an object with a 'name'")
        oparams = out.get("parameters") or {}
        if not isinstance(oparams, dict):
            raise RequestError(400, f"outputs[{j}]: 'parameters' must be an object")
        outputs.append(RequestedOutput(out["name"], oparams.get("binary_data") is True))
    rid = doc.get("id")
    if rid is not None and not isinstance(rid, str):
        raise RequestError(400, "'id' must be a string")
    return InferRequest(id=rid, tensors=tensors, outputs=tuple(outputs),
                        binary_default=params.get("binary_data_output") is True)


def _encode(arr: np.ndarray, datatype: str) -> bytes:
    if datatype == "BYTES":
        parts = []
        for s in arr.reshape(-1).tolist():
            raw = str(s).encode("utf-8")
            parts.append(struct.pack("<I", len(raw)) + raw)
        return b"".join(parts)
    return np.ascontiguousarray(arr, dtype=np.dtype(NUMERIC[datatype]).newbyteorder("<")
                                ).tobytes()


def build_response(model: ServedModel, version: str | None, request: InferRequest,
                   result: Predictions) -> tuple[dict[str, Any], bytes]:
    """(JSON header, binary tail); the tail is empty when every output is JSON."""
    specs = {s.name: s for s in model.output_specs()}
    arrays: dict[str, np.ndarray] = {}
    if result.labels is not None:
        arrays["predictions"] = np.asarray(result.labels, dtype=object)
        assert result.probabilities is not None
        arrays["probabilities"] = result.probabilities
    else:
        assert result.values is not None
        arrays["predictions"] = result.values
    wanted = request.outputs or tuple(RequestedOutput(n, request.binary_default) for n in specs)
    unknown = [o.name for o in wanted if o.name not in specs]
    if unknown:
        raise RequestError(400, f"{len(unknown)} unknown output(s); the model gives "
                                + ", ".join(specs))
    outputs, tail = [], []
    for out in wanted:
        spec, arr = specs[out.name], arrays[out.name]
        entry: dict[str, Any] = {"name": out.name, "datatype": spec.datatype,
                                 "shape": list(arr.shape)}
        if out.binary or (not request.outputs and request.binary_default):
            raw = _encode(arr, spec.datatype)
            entry["parameters"] = {"binary_data_size": len(raw)}
            tail.append(raw)
        else:
            entry["data"] = arr.reshape(-1).tolist()
        outputs.append(entry)
    doc: dict[str, Any] = {"model_name": model.name, "outputs": outputs}
    if version is not None:
        doc["model_version"] = version
    if request.id is not None:
        doc["id"] = request.id
    return doc, b"".join(tail)


def model_metadata(model: ServedModel, version: str | None) -> dict[str, Any]:
    return {"name": model.name, "versions": [version] if version is not None else [],
            "platform": "onnxruntime_onnx",
            "inputs": [s.to_json() for s in model.decoder.protocol_inputs()],
            "outputs": [s.to_json() for s in model.output_specs()]}


def server_metadata() -> dict[str, Any]:
    import ci_ml

    return {"name": "ci-ml", "version": ci_ml.__version__, "extensions": ["binary_tensor_data"]}
