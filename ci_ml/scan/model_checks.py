"""Structural checks of safetensors and ONNX files, without executing anything.

safetensors: 8-byte little-endian header length, a JSON header whose tensors'
``data_offsets`` lie inside the file, match their dtype and shape, and tile the
data section exactly (what the reference loader insists on).
ONNX: external-data locations must stay inside the model's directory (a
``../../etc/passwd`` location makes a loader read, or a converter write, any
file), then ``onnx.checker`` on the model.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

MAX_HEADER = 100 * 1024 * 1024  # the reference implementation's limit
DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2,
               "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
               "C64": 8}


def safetensors_problems(path: Path) -> list[str]:
    """Why a loader would reject (or be attacked by) this file; empty if it is sound."""
    size = path.stat().st_size
    if size < 8:
        return [f"file is {size} bytes, shorter than the 8-byte header length"]
    with open(path, "rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
        if n > MAX_HEADER:
            return [f"header length {n} exceeds the {MAX_HEADER}-byte limit"]
        if n > size - 8:
            return [f"header length {n} runs past the end of the file ({size} bytes)"]
        raw = fh.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        return [f"header is not UTF-8 JSON: {exc}"]
    if not isinstance(header, dict):
        return ["header is not a JSON object"]
    data_len = size - 8 - n
    problems: list[str] = []
    spans: list[tuple[int, int, str]] = []
    for name, info in header.items():
        if name == "__metadata__":
            if not isinstance(info, dict) or not all(
                    isinstance(k, str) and isinstance(v, str) for k, v in info.items()):
                problems.append("__metadata__ must map strings to strings")
            continue
        problem = _tensor_problem(name, info, data_len)
        if problem:
            problems.append(problem)
        else:
            begin, end = info["data_offsets"]
            spans.append((begin, end, name))
    if not problems:
        problems += _tiling_problems(sorted(spans), data_len)
    return problems


def _tensor_problem(name: str, info: Any, data_len: int) -> str | None:
    if not isinstance(info, dict):
        return f"tensor {name!r}: entry is not an object"
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if dtype not in DTYPE_BYTES:
        return f"tensor {name!r}: unknown dtype {dtype!r}"
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        return f"tensor {name!r}: shape must be a list of non-negative integers"
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(isinstance(o, int) for o in offsets)):
        return f"tensor {name!r}: data_offsets must be [begin, end]"
    begin, end = offsets
    if not 0 <= begin <= end <= data_len:
        return f"tensor {name!r}: data_offsets {offsets} outside the {data_len}-byte data section"
    expected = math.prod(shape) * DTYPE_BYTES[dtype]
    if end - begin != expected:
        return (f"tensor {name!r}: {end - begin} bytes for shape {shape} of {dtype} "
                f"(expected {expected})")
    return None


def _tiling_problems(spans: list[tuple[int, int, str]], data_len: int) -> list[str]:
    cursor = 0
    for begin, end, name in spans:
        if begin < cursor:
            return [f"tensor {name!r} overlaps the tensor before it"]
        if begin > cursor:
            return [f"{begin - cursor} unreferenced bytes before tensor {name!r}"]
        cursor = end
    if cursor != data_len:
        return [f"{data_len - cursor} unreferenced bytes after the last tensor"]
    return []


def _tensors(graph: Any) -> Iterator[Any]:
    """Every TensorProto of a graph: initializers, sparse ones, and node attributes, recursively."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _tensors(attr.g)
            for sub in attr.graphs:
                yield from _tensors(sub)


def onnx_problems(path: Path) -> tuple[list[str], list[str]]:
    """(external-data locations escaping the model's directory, other validity problems)."""
    import onnx  # heavy: only when there is an ONNX file to look at

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf raises several unrelated types
        return [], [f"not a readable ONNX model: {type(exc).__name__}: {exc}"]
    base = path.parent.resolve()
    escapes: list[str] = []
    for tensor in _tensors(model.graph):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = {e.key: e.value for e in tensor.external_data}
        location = info.get("location", "")
        target = (base / location).resolve()
        if (not location or os.path.isabs(location) or ".." in Path(location).parts
                or not target.is_relative_to(base)):
            escapes.append(f"tensor {tensor.name!r}: external data location {location!r} "
                           "escapes the model directory")
    if escapes:
        return escapes, []  # never let the checker open files outside the model directory
    try:
        onnx.checker.check_model(str(path))
    except Exception as exc:  # noqa: BLE001 - ValidationError and protobuf/IO errors alike
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return [], [f"onnx.checker: {first[:300]}"]
    return [], []
