"""Small ONNX models made with onnx.helper (no torch, no training), with their model.json."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

WEIGHTS = np.array([[1.0, -1.0, 0.5], [0.0, 2.0, -0.5], [-1.0, 0.0, 1.0], [0.5, 0.5, 0.5]],
                   dtype=np.float32)
BIAS = np.array([0.1, -0.2, 0.0], dtype=np.float32)


def make_model(directory: Path, *, sample_shape: tuple[int, ...] = (1, 2, 2),
               batch: int | str = "batch", classes: tuple[str, ...] = ("a", "b", "c"),
               scale: float = 2.0, standardize: bool = False, write_card: bool = True) -> Path:
    """A flatten + linear classifier over 4 features: logits = x @ WEIGHTS + BIAS."""
    directory.mkdir(parents=True, exist_ok=True)
    nodes = [helper.make_node("Flatten", ["input"], ["flat"], axis=1),
             helper.make_node("Gemm", ["flat", "W", "B"], ["logits"])]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, *sample_shape])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, len(classes)])],
        [numpy_helper.from_array(WEIGHTS[:, : len(classes)], "W"),
         numpy_helper.from_array(BIAS[: len(classes)], "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = directory / "model.onnx"
    onnx.save(model, str(path))
    if write_card:
        n = int(np.prod(sample_shape))
        card = {"format": "ci-ml/1",
                "spec": {"name": "tiny", "input_shape": list(sample_shape),
                         "num_classes": len(classes), "params": {}},
                "classes": list(classes), "scale": scale,
                "features": [f"f{i}" for i in range(n)],
                "mean": [0.5] * n if standardize else None,
                "std": [2.0] * n if standardize else None}
        (directory / "model.json").write_text(json.dumps(card))
    return path


def expected(raw: np.ndarray, scale: float = 2.0, standardize: bool = False,
             classes: tuple[str, ...] = ("a", "b", "c")) -> tuple[list[str], np.ndarray]:
    """What the server must answer, computed with numpy alone."""
    x = raw / scale
    if standardize:
        x = (x - 0.5) / 2.0
    logits = x @ WEIGHTS[:, : len(classes)].astype(np.float64) + BIAS[: len(classes)]
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs = e / e.sum(axis=1, keepdims=True)
    return [classes[i] for i in probs.argmax(axis=1)], probs


MIXED_W = np.array([[1.0, -1.0], [0.5, 0.5], [-2.0, 1.0], [0.0, 3.0]], dtype=np.float32)


def make_mixed_model(directory: Path, *, task: str = "classification") -> Path:
    """Three named inputs: x float32 [batch, 2], n int64 [batch, 1], s string [batch, 1].

    features = [x0, x1, n, code(s)] with code("a") = 0, code("b") = 1, else -1;
    classification: logits = features @ MIXED_W (classes "no", "yes");
    regression: value = features @ MIXED_W[:, 1].
    """
    directory.mkdir(parents=True, exist_ok=True)
    nodes = [
        helper.make_node("LabelEncoder", ["s"], ["code"], domain="ai.onnx.ml",
                         keys_strings=["a", "b"], values_int64s=[0, 1], default_int64=-1),
        helper.make_node("Cast", ["code"], ["code_f"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["n"], ["n_f"], to=TensorProto.FLOAT),
        helper.make_node("Concat", ["x", "n_f", "code_f"], ["features"], axis=1),
        helper.make_node("MatMul", ["features", "W"], ["out"]),
    ]
    weights = MIXED_W if task == "classification" else MIXED_W[:, 1:]
    graph = helper.make_graph(
        nodes, "mixed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2]),
         helper.make_tensor_value_info("n", TensorProto.INT64, ["batch", 1]),
         helper.make_tensor_value_info("s", TensorProto.STRING, ["batch", 1])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", weights.shape[1]])],
        [numpy_helper.from_array(weights, "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("ai.onnx.ml", 3)])
    model.ir_version = 8
    path = directory / "model.onnx"
    onnx.save(model, str(path))
    card: dict[str, object] = {"format": "ci-ml/1", "name": "mixed", "version": "3",
                               "task": task}
    if task == "classification":
        card["classes"] = ["no", "yes"]
    (directory / "model.json").write_text(json.dumps(card))
    return path


def mixed_expected(x: np.ndarray, n: np.ndarray, s: list[str]) -> np.ndarray:
    code = np.array([{"a": 0, "b": 1}.get(v, -1) for v in s], dtype=np.float64)
    features = np.column_stack([x, n.reshape(-1), code])
    return features @ MIXED_W.astype(np.float64)
