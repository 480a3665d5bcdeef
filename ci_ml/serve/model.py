"""An exported model as the server sees it: the ONNX graph plus the model.json beside it.

The artifact contract (from the prune step): ``model.onnx`` (maybe with
``model.onnx.data``) and ``model.json`` in the same directory. model.json is read
as plain JSON here, not through ``ci_ml.model.persist``, so serving never needs torch.
Inputs on the wire are raw feature values: divided by ``scale``, then standardized
when ``mean``/``std`` are set, exactly as in training.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ci_ml.errors import InputError

SPEC = "model.json"
_DTYPES = {"tensor(float)": "float32", "tensor(double)": "float64", "tensor(float16)": "float16"}
_PICKLE_HEAD = b"\x80"


@dataclass(frozen=True)
class Signature:
    """What a request must look like and what a response holds, from the graph and model.json."""

    input_name: str
    output_name: str
    sample_shape: tuple[int, ...]      # one sample, without the batch axis
    dtype: str                          # numpy name of the graph's input type
    fixed_batch: int | None             # the graph's batch size when it is not dynamic
    classes: tuple[str, ...]
    features: tuple[str, ...]
    scale: float
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    # A tabular model (ci-ml/2: named fields, categories, missing values, regression):
    # the JSON Schema of one /predict row, and the task.
    row_schema: dict[str, Any] | None = None
    task: str = "classification"

    @property
    def n_features(self) -> int:
        return math.prod(self.sample_shape)

    def to_json(self) -> dict[str, Any]:
        return {"input_name": self.input_name, "output_name": self.output_name,
                "sample_shape": list(self.sample_shape), "dtype": self.dtype,
                "fixed_batch": self.fixed_batch, "classes": list(self.classes),
                "features": list(self.features), "scale": self.scale,
                "standardized": self.mean is not None}


@dataclass(frozen=True)
class Card:
    """The fields of model.json the server needs (format ci-ml/1)."""

    classes: tuple[str, ...]
    features: tuple[str, ...]
    scale: float
    input_shape: tuple[int, ...] | None
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None

    @classmethod
    def read(cls, path: Path) -> Card:
        try:
            data = json.loads(path.read_text("utf-8"))
        except FileNotFoundError:
            raise InputError(f"{path}: not found (an exported model needs model.json beside "
                             "model.onnx; run `ci-ml prune`)") from None
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise InputError(f"{path}: not a readable JSON model card ({exc})") from exc
        try:
            spec = data.get("spec") or {}
            shape = spec.get("input_shape")
            mean, std = data.get("mean"), data.get("std")
            card = cls(
                classes=tuple(str(c) for c in data["classes"]),
                features=tuple(str(f) for f in data.get("features") or ()),
                scale=float(data.get("scale", 1.0)),
                input_shape=tuple(int(v) for v in shape) if shape else None,
                mean=tuple(float(v) for v in mean) if mean else None,
                std=tuple(float(v) for v in std) if std else None,
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InputError(f"{path}: not a valid ci-ml model card ({exc!s})") from exc
        if not card.classes:
            raise InputError(f"{path}: 'classes' is empty")
        if not (math.isfinite(card.scale) and card.scale > 0):
            raise InputError(f"{path}: 'scale' must be a positive number, got {card.scale}")
        if (card.mean is None) != (card.std is None):
            raise InputError(f"{path}: 'mean' and 'std' must be set together")
        if card.std is not None and any(s <= 0 or not math.isfinite(s) for s in card.std):
            raise InputError(f"{path}: 'std' must hold positive numbers")
        return card


def sha256_of(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


class ServedModel:
    """An ONNX Runtime session plus the pre- and post-processing the model was trained with.

    ``predict`` is safe to call from many threads: ``InferenceSession.run`` is thread-safe.
    """

    def __init__(self, path: Path, threads: int = 1) -> None:
        self.path = path
        if path.is_dir():
            path = path / "model.onnx"
            self.path = path
        if not path.is_file():
            raise InputError(f"{path}: ONNX model not found (run `ci-ml prune`, or pass --model)")
        head = path.read_bytes()[:1]
        if path.suffix in (".pt", ".pth", ".pkl", ".pickle", ".ckpt") or head == _PICKLE_HEAD:
            raise InputError(f"{path}: refusing a pickle-based file; the server loads ONNX only")
        data_files = sorted(path.parent.glob(path.name + ".data"))
        self.tabular = tabular_model(path, threads)
        if self.tabular is not None:
            # Raw rows in, through the one raw-row -> ONNX path training and evaluate use.
            self.session = self.tabular.session
            self.card = Card(self.tabular.card.classes, self.tabular.fields, 1.0, None, None, None)
            self.signature = tabular_signature(self.tabular)
            self.sha256 = sha256_of([path, *data_files, path.parent / SPEC])
            self._mean = self._std = None
            self._dtype = np.dtype(np.float32)
            return
        self.card = Card.read(path.parent / SPEC)
        self.session = _session(path, threads)
        self.signature = self._signature()
        self.sha256 = sha256_of([path, *data_files, path.parent / SPEC])
        n = self.signature.n_features
        mean = np.asarray(self.card.mean, dtype=np.float64) if self.card.mean else None
        std = np.asarray(self.card.std, dtype=np.float64) if self.card.std else None
        for name, vec in (("mean", mean), ("std", std)):
            if vec is not None and vec.size != n:
                raise InputError(f"{path.parent / SPEC}: '{name}' has {vec.size} values, the model "
                                 f"takes {n} features")
        self._mean, self._std = mean, std
        self._dtype = np.dtype(self.signature.dtype)

    def _signature(self) -> Signature:
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or not outputs:
            raise InputError(f"{self.path}: the server needs a graph with one input and at least "
                             f"one output, this one has {len(inputs)} inputs")
        inp, out = inputs[0], outputs[0]
        dtype = _DTYPES.get(inp.type)
        if dtype is None:
            raise InputError(f"{self.path}: input '{inp.name}' has type {inp.type}; the server "
                             "serves float models only")
        shape = list(inp.shape)
        if len(shape) < 2:
            raise InputError(f"{self.path}: input '{inp.name}' has shape {shape}; expected a batch "
                             "axis followed by the sample's shape")
        sample: list[int] = []
        for dim in shape[1:]:
            if not isinstance(dim, int) or dim < 1:
                raise InputError(f"{self.path}: input '{inp.name}' has a dynamic sample axis "
                                 f"({shape}); only the batch axis may be dynamic")
            sample.append(dim)
        fixed = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
        card = self.card
        if card.input_shape and math.prod(card.input_shape) != math.prod(sample):
            raise InputError(f"{self.path.parent / SPEC}: input_shape {list(card.input_shape)} "
                             f"does not match the graph's {sample}")
        if card.features and len(card.features) != math.prod(sample):
            raise InputError(f"{self.path.parent / SPEC}: {len(card.features)} features listed, "
                             f"the graph takes {math.prod(sample)}")
        out_shape = list(out.shape)
        n_out = out_shape[1] if len(out_shape) == 2 else None
        if isinstance(n_out, int) and n_out != len(card.classes):
            raise InputError(f"{self.path}: output '{out.name}' has {out_shape[1]} classes, "
                             f"model.json lists {len(card.classes)}")
        return Signature(input_name=inp.name, output_name=out.name, sample_shape=tuple(sample),
                         dtype=dtype, fixed_batch=fixed, classes=card.classes,
                         features=card.features, scale=card.scale, mean=card.mean, std=card.std)

    def prepare(self, raw: np.ndarray) -> np.ndarray:
        """Raw feature rows (batch, n_features) -> the graph's input tensor."""
        x = raw / self.card.scale
        if self._mean is not None and self._std is not None:
            x = (x - self._mean) / self._std
        with np.errstate(over="ignore"):  # out-of-range values become inf; the caller rejects them
            x = x.astype(self._dtype, copy=False)
        return x.reshape((raw.shape[0], *self.signature.sample_shape))

    def run(self, x: np.ndarray) -> np.ndarray:
        """The graph's raw output for a prepared batch, honouring a fixed batch size."""
        sig = self.signature
        if sig.fixed_batch is None or x.shape[0] == sig.fixed_batch:
            return np.asarray(self.session.run([sig.output_name], {sig.input_name: x})[0])
        # A graph exported with a frozen batch axis: run it in chunks, padding the last one.
        size, parts = sig.fixed_batch, []
        for start in range(0, x.shape[0], size):
            chunk = x[start:start + size]
            pad = size - chunk.shape[0]
            if pad:
                chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), chunk.dtype)])
            out = np.asarray(self.session.run([sig.output_name], {sig.input_name: chunk})[0])
            parts.append(out[: size - pad])
        return np.concatenate(parts)

    def predict(self, raw: np.ndarray) -> tuple[list[str], np.ndarray]:
        """Class labels and softmax probabilities for raw feature rows."""
        return self.predict_prepared(self.prepare(raw))

    def predict_prepared(self, x: np.ndarray) -> tuple[list[str], np.ndarray]:
        logits = self.run(x).astype(np.float64, copy=False)
        logits = logits.reshape(x.shape[0], -1)
        if logits.shape[1] != len(self.card.classes):
            raise RuntimeError(f"model returned {logits.shape[1]} scores for "
                               f"{len(self.card.classes)} classes")
        shifted = logits - logits.max(axis=1, keepdims=True)
        exp = np.exp(shifted)
        probs = exp / exp.sum(axis=1, keepdims=True)
        labels = [self.card.classes[i] for i in probs.argmax(axis=1)]
        return labels, probs


def tabular_model(path: Path, threads: int) -> Any:
    """The model as ``ci_ml.model.inference.OnnxModel`` when its card (ci-ml/2) has more than
    plain numbers in one matrix: categories, dates, missing values, raw named inputs, or a
    regression target. None for a numeric classifier, which keeps the numeric fast path."""
    card_path = path.parent / SPEC
    try:
        doc = json.loads(card_path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None  # Card.read reports the problem
    if not isinstance(doc, dict) or doc.get("format") != "ci-ml/2":
        return None
    fields, inputs = doc.get("fields") or [], doc.get("inputs") or []
    plain = (doc.get("task") == "classification"
             and all(isinstance(f, dict) and f.get("kind") == "number" and not f.get("nullable")
                     for f in fields)
             and len(inputs) == 1 and isinstance(inputs[0], dict) and inputs[0].get("encoded"))
    if plain:
        return None
    from ci_ml.model.card import read_card
    from ci_ml.model.inference import OnnxModel, make_session

    card = read_card(card_path)
    return OnnxModel(path, card, session=make_session(path, threads))


def tabular_signature(model: Any) -> Signature:
    """What the OpenAPI document and DAST need to know about a tabular model."""
    card = model.card
    props: dict[str, Any] = {}
    for f in card.fields:
        if f.kind == "category":
            schema: dict[str, Any] = {"type": "string", "maxLength": 1024,
                                      "description": f"one of {len(f.categories)} categories seen "
                                                     "in training; others are counted as unseen"}
            if f.categories:
                schema["example"] = f.categories[0]
        elif f.kind == "datetime":
            schema = {"type": "string", "format": "date-time", "maxLength": 64}
        else:
            schema = {"type": "number", "format": "double"}
            if f.low is not None:
                schema["example"] = f.low
        schema["nullable"] = True  # a missing value: imputed (numbers) or all-zero (categories)
        props[f.name] = schema
    row = {"oneOf": [
        {"type": "object", "additionalProperties": False, "properties": props},
        {"type": "array", "minItems": len(card.fields), "maxItems": len(card.fields),
         "description": "The values in field order: " + ", ".join(card.features[:8])
                        + (", ..." if len(card.fields) > 8 else "")},
    ]}
    first = model.bindings[0]
    return Signature(input_name=first.name, output_name=card.outputs.scores or "",
                     sample_shape=(len(card.fields),), dtype="float32", fixed_batch=None,
                     classes=card.classes, features=card.features, scale=1.0,
                     row_schema=row, task=card.task)


def _session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), sess_options=options,
                                    providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own pybind classes, not a common base
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise InputError(f"{path}: not a loadable ONNX model ({first})") from exc
