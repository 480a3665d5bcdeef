"""An exported model as the server sees it: the ONNX graph plus the model.json beside it.

The artifact contract (from the prune step): ``model.onnx`` (maybe with
``model.onnx.data``) and ``model.json`` in the same directory. model.json is read
as plain JSON here, not through ``ci_ml.model.persist``, so serving never needs torch.
The card says the task (``classification`` with its ``classes``, or ``regression``),
the input format (see ``ci_ml.serve.decoders``) and its preprocessing.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ci_ml.errors import InputError
from ci_ml.serve.decoders import DecoderLimits, InputDecoder, decoder_for
from ci_ml.serve.decoders.interface import (
    ONNX_TYPES,
    Batch,
    Predictions,
    RequestError,
    TensorSpec,
)

SPEC = "model.json"
TASKS = ("classification", "regression")
_PICKLE_HEAD = b"\x80"


@dataclass(frozen=True)
class Card:
    """The fields of model.json the server needs (format ci-ml/1), plus the raw document."""

    task: str
    classes: tuple[str, ...]
    scores: str                          # "logits" (softmax applied) or "probabilities"
    name: str | None
    version: str | None
    doc: Mapping[str, Any]

    @classmethod
    def read(cls, path: Path) -> Card:
        try:
            data = json.loads(path.read_text("utf-8"))
        except FileNotFoundError:
            raise InputError(f"{path}: not found (an exported model needs model.json beside "
                             "model.onnx; run `ci-ml prune`)") from None
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise InputError(f"{path}: not a readable JSON model card ({exc})") from exc
        if not isinstance(data, dict):
            raise InputError(f"{path}: not a valid ci-ml model card (not a JSON object)")
        try:
            task = str(data.get("task") or "classification")
            classes = tuple(str(c) for c in data.get("classes") or ())
            scores = str(data.get("scores") or "logits")
            scale = float(data.get("scale", 1.0))
            mean, std = data.get("mean"), data.get("std")
            std_v = [float(v) for v in std] if std else None
            mean_v = [float(v) for v in mean] if mean else None
        except (TypeError, ValueError) as exc:
            raise InputError(f"{path}: not a valid ci-ml model card ({exc!s})") from exc
        if task not in TASKS:
            raise InputError(f"{path}: 'task' must be one of {', '.join(TASKS)}, got {task!r}")
        if task == "classification" and not classes:
            raise InputError(f"{path}: 'classes' is missing or empty")
        if scores not in ("logits", "probabilities"):
            raise InputError(f"{path}: 'scores' must be 'logits' or 'probabilities'")
        if not (math.isfinite(scale) and scale > 0):
            raise InputError(f"{path}: 'scale' must be a positive number, got {scale}")
        if (mean_v is None) != (std_v is None):
            raise InputError(f"{path}: 'mean' and 'std' must be set together")
        if std_v is not None and any(s <= 0 or not math.isfinite(s) for s in std_v):
            raise InputError(f"{path}: 'std' must hold positive numbers")
        name = data.get("name")
        version = data.get("version")
        return cls(task=task, classes=classes, scores=scores,
                   name=str(name) if name else None,
                   version=str(version) if version is not None else None, doc=data)

    @property
    def input_shape(self) -> tuple[int, ...] | None:
        shape = (self.doc.get("spec") or {}).get("input_shape")
        return tuple(int(v) for v in shape) if shape else None


def sha256_of(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def _graph_specs(items: Any, path: Path, kind: str) -> tuple[tuple[TensorSpec, ...],
                                                              int | None]:
    specs, fixed = [], set()
    for item in items:
        dtype = ONNX_TYPES.get(item.type)
        if dtype is None:
            raise InputError(f"{path}: {kind} '{item.name}' has type {item.type}; the server "
                             "serves float32, float64, int64 and string tensors")
        shape = list(item.shape)
        if not shape:
            raise InputError(f"{path}: {kind} '{item.name}' is a scalar; expected a batch axis")
        sample = []
        for dim in shape[1:]:
            if not isinstance(dim, int) or dim < 1:
                raise InputError(f"{path}: {kind} '{item.name}' has a dynamic sample axis "
                                 f"({shape}); only the batch axis may be dynamic")
            sample.append(dim)
        if isinstance(shape[0], int) and shape[0] > 0:
            fixed.add(shape[0])
        specs.append(TensorSpec(item.name, dtype, (-1, *sample)))
    if len(fixed) > 1:
        raise InputError(f"{path}: the {kind}s have different fixed batch sizes {sorted(fixed)}")
    return tuple(specs), (fixed.pop() if fixed else None)


class ServedModel:
    """An ONNX Runtime session plus the pre- and post-processing the model was trained with.

    ``predict`` is safe to call from many threads: ``InferenceSession.run`` is thread-safe.
    """

    def __init__(self, path: Path, threads: int = 1, limits: DecoderLimits | None = None) -> None:
        if path.is_dir():
            path = path / "model.onnx"
        self.path = path
        if not path.is_file():
            raise InputError(f"{path}: ONNX model not found (run `ci-ml prune`, or pass --model)")
        with open(path, "rb") as fh:
            head = fh.read(1)
        if path.suffix in (".pt", ".pth", ".pkl", ".pickle", ".ckpt") or head == _PICKLE_HEAD:
            raise InputError(f"{path}: refusing a pickle-based file; the server loads ONNX only")
        self.card = Card.read(path.parent / SPEC)
        self.session = _session(path, threads)
        self.inputs, fixed_in = _graph_specs(self.session.get_inputs(), path, "input")
        outputs = list(self.session.get_outputs())
        if not self.inputs or not outputs:
            raise InputError(f"{path}: the server needs a graph with inputs and outputs")
        self.fixed_batch = fixed_in
        self.output_name = self._score_output(outputs)
        self._check_card(path)
        try:
            self.decoder: InputDecoder = decoder_for(self.card.doc, self.inputs,
                                                     limits or DecoderLimits())
        except ValueError as exc:
            raise InputError(f"{path.parent / SPEC}: {exc}") from None
        self._decoder_reads_outputs = (type(self.decoder).read_outputs
                                       is not InputDecoder.read_outputs)
        data_files = sorted(path.parent.glob(path.name + ".data"))
        self.sha256 = sha256_of([path, *data_files, path.parent / SPEC])

    @property
    def name(self) -> str:
        return self.card.name or "model"

    def _score_output(self, outputs: list[Any]) -> str:
        """The graph output holding the scores (or values): the card's ``output`` if named,
        else the first float output whose last axis matches the classes, else the first."""
        wanted = self.card.doc.get("output")
        names = [o.name for o in outputs]
        if wanted:
            if wanted not in names:
                raise InputError(f"{self.path.parent / SPEC}: 'output' {wanted!r} is not an "
                                 f"output of the graph ({', '.join(names)})")
            return str(wanted)
        n = len(self.card.classes)
        for out in outputs:
            shape = list(out.shape)
            if (out.type in ("tensor(float)", "tensor(double)") and len(shape) == 2
                    and (self.card.task == "regression" or shape[1] == n)):
                return str(out.name)
        return str(outputs[0].name)

    def _check_card(self, path: Path) -> None:
        card, spec = self.card, self.inputs[0]
        n = math.prod(spec.sample_shape)
        if card.input_shape and len(self.inputs) == 1 and math.prod(card.input_shape) != n:
            raise InputError(f"{path.parent / SPEC}: input_shape {list(card.input_shape)} "
                             f"does not match the graph's {list(spec.sample_shape)}")
        features = card.doc.get("features") or ()
        # A rows card lists raw fields (before one-hot encoding): its decoder checks them.
        rows = card.doc.get("input_format") == "rows"
        if features and len(self.inputs) == 1 and len(features) != n and not rows:
            raise InputError(f"{path.parent / SPEC}: {len(features)} features listed, "
                             f"the graph takes {n}")
        for key in ("mean", "std"):
            vec = card.doc.get(key)
            if vec and len(vec) != n:
                raise InputError(f"{path.parent / SPEC}: '{key}' has {len(vec)} values, the "
                                 f"model takes {n} features")
        out = next(o for o in self.session.get_outputs() if o.name == self.output_name)
        shape = list(out.shape)
        if card.task == "classification" and len(shape) == 2 and isinstance(shape[1], int) \
                and shape[1] != len(card.classes):
            raise InputError(f"{path}: output '{out.name}' has {shape[1]} classes, "
                             f"model.json lists {len(card.classes)}")

    def output_specs(self) -> tuple[TensorSpec, ...]:
        """What the server answers, as the protocol's output tensors."""
        if self.card.task == "classification":
            return (TensorSpec("predictions", "object", (-1,)),
                    TensorSpec("probabilities", "float64", (-1, len(self.card.classes))))
        out = next(o for o in self.session.get_outputs() if o.name == self.output_name)
        width = out.shape[1] if len(out.shape) == 2 and isinstance(out.shape[1], int) else 1
        return (TensorSpec("predictions", "float64", (-1,) if width == 1 else (-1, width)),)

    def run(self, feed: dict[str, np.ndarray], size: int) -> np.ndarray:
        """The score output for a decoded batch, honouring a fixed batch size."""
        name = self.output_name
        if self.fixed_batch is None or size == self.fixed_batch:
            return np.asarray(self.session.run([name], feed)[0])
        # A graph exported with a frozen batch axis: run it in chunks, padding the last one.
        step, parts = self.fixed_batch, []
        for start in range(0, size, step):
            chunk = {}
            pad = 0
            for key, x in feed.items():
                part = x[start:start + step]
                pad = step - part.shape[0]
                if pad:
                    filler = np.zeros((pad, *part.shape[1:]), part.dtype) if part.dtype != object \
                        else np.full((pad, *part.shape[1:]), "", dtype=object)
                    part = np.concatenate([part, filler])
                chunk[key] = part
            out = np.asarray(self.session.run([name], chunk)[0])
            parts.append(out[: step - pad])
        return np.concatenate(parts)

    def predict(self, batch: Batch) -> Predictions:
        if self._decoder_reads_outputs:
            names = [o.name for o in self.session.get_outputs()]
            outputs = dict(zip(names, self.session.run(None, batch.feed), strict=True))
            result = self.decoder.read_outputs(outputs, batch)
            if result is not None:
                return result
        scores = self.run(batch.feed, batch.size).astype(np.float64, copy=False)
        scores = scores.reshape(batch.size, -1)
        if not np.isfinite(scores).all():
            raise RequestError(422, "the model produced non-finite outputs for this input")
        if self.card.task == "regression":
            return Predictions(values=scores[:, 0] if scores.shape[1] == 1 else scores)
        if scores.shape[1] != len(self.card.classes):
            raise RuntimeError(f"model returned {scores.shape[1]} scores for "
                               f"{len(self.card.classes)} classes")
        if self.card.scores == "logits":
            # In place: the same arithmetic as exp(s - max) / sum, without two temporaries.
            probs = scores - scores.max(axis=1, keepdims=True)
            np.exp(probs, out=probs)
            probs /= probs.sum(axis=1, keepdims=True)
        else:
            probs = scores
        classes = self.card.classes
        labels = [classes[i] for i in probs.argmax(axis=1).tolist()]
        return Predictions(labels=labels, probabilities=probs)


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
