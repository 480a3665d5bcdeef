"""``ci-ml evaluate --model PATH``: the training metrics, for any model, on the config's test set.

The gate compares a candidate with the model now in production; this computes the
production model's side with exactly the code that wrote the candidate's
``metrics.json``. PATH is a ci-ml model directory (``model.json`` plus
``model.safetensors``) or an ONNX file; neither can run code when loaded, and a
pickle-based checkpoint is refused with an explanation.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ci_ml.config import Config
from ci_ml.data.loader import DataBundle, Table, load_data
from ci_ml.errors import InputError
from ci_ml.fsutil import sha256_file
from ci_ml.model.metrics import classification_metrics
from ci_ml.model.persist import SPEC, WEIGHTS, ModelCard, load_model, refuse_pickle

EVALUATION = "evaluation.json"
BATCH = 512


@dataclass(frozen=True)
class Preprocessing:
    """How raw feature rows become model inputs: the model's own, not the config's."""

    classes: tuple[str, ...]
    features: tuple[str, ...]
    scale: float
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    input_shape: tuple[int, ...]

    @classmethod
    def from_card(cls, card: ModelCard) -> Preprocessing:
        return cls(card.classes, card.features, card.scale, card.mean, card.std,
                   card.spec.input_shape)

    @classmethod
    def from_bundle(cls, bundle: DataBundle) -> Preprocessing:
        return cls(bundle.classes, bundle.train.features, bundle.scale, bundle.mean, bundle.std,
                   bundle.input_shape)

    def inputs(self, table: Table) -> np.ndarray:
        if self.features and self.features != table.features:
            extra = sorted(set(table.features) - set(self.features))
            missing = sorted(set(self.features) - set(table.features))
            what = (f"the data lacks {missing[0]!r}" if missing else
                    f"the data has {extra[0]!r}" if extra else "the column order differs")
            raise InputError(f"data.test {table.path.name} does not fit the model's features "
                             f"({len(self.features)} columns; {what})")
        if math.prod(self.input_shape) != table.x.shape[1]:
            raise InputError(f"the model takes inputs of shape {list(self.input_shape)} "
                             f"({math.prod(self.input_shape)} values), but data.test has "
                             f"{table.x.shape[1]} features")
        x = np.nan_to_num(table.x / self.scale)
        if self.mean is not None and self.std is not None:
            x = (x - np.asarray(self.mean)) / np.asarray(self.std)
        return x.astype(np.float32).reshape((len(x), *self.input_shape))

    def targets(self, table: Table) -> np.ndarray:
        index = {c: i for i, c in enumerate(self.classes)}
        unknown = sorted(set(table.labels) - set(index))
        if unknown:
            raise InputError(f"data.test label {unknown[0]!r} is not one of the model's "
                             f"{len(self.classes)} classes")
        return np.array([index[label] for label in table.labels], dtype=np.int64)


def _loss(logits: np.ndarray, y: np.ndarray) -> float:
    # torch's cross-entropy, as training computes it: both files then agree to the digit.
    import torch
    from torch import nn

    return float(nn.functional.cross_entropy(torch.from_numpy(logits.astype(np.float32)),
                                             torch.from_numpy(y)))


def _check_logits(logits: np.ndarray, n_rows: int, n_classes: int) -> None:
    if logits.ndim != 2 or logits.shape != (n_rows, n_classes):
        raise InputError(f"the model outputs shape {list(logits.shape[1:])}, "
                         f"expected [{n_classes}] class scores")


def _torch_logits(path: Path, config: Config, table: Table) -> tuple[np.ndarray, Preprocessing,
                                                                     dict[str, Any]]:
    import torch

    model, card = load_model(path, config.root)
    prep = Preprocessing.from_card(card)
    x = prep.inputs(table)
    torch.set_num_threads(int(config.section("train")["threads"]))
    try:
        with torch.no_grad():
            outs = [model(torch.from_numpy(x[i:i + BATCH])) for i in range(0, len(x), BATCH)]
    except RuntimeError as exc:
        raise InputError(f"data of shape {list(x.shape[1:])} does not fit the model: "
                         f"{str(exc).splitlines()[0]}") from exc
    directory = path if path.is_dir() else path.parent
    source = {"path": str(path), "format": "ci-ml", "model": card.spec.name,
              "weights_sha256": sha256_file(directory / WEIGHTS)}
    return torch.cat(outs).numpy(), prep, source


def _onnx_file(path: Path) -> Path | None:
    if path.is_file() and path.suffix == ".onnx":
        return path
    if path.is_dir() and not (path / WEIGHTS).is_file() and (path / "model.onnx").is_file():
        return path / "model.onnx"
    return None


def _onnx_logits(onnx_path: Path, config: Config, table: Table,
                 bundle: DataBundle) -> tuple[np.ndarray, Preprocessing, dict[str, Any]]:
    import onnxruntime as ort

    refuse_pickle(onnx_path)
    # Preprocessing travels with the model when the ONNX file sits in a ci-ml model
    # directory (prune's output); a bare ONNX file is taken to use the config's.
    spec_path = onnx_path.parent / SPEC
    if spec_path.is_file():
        try:
            prep = Preprocessing.from_card(ModelCard.from_json(json.loads(spec_path.read_text())))
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(f"{spec_path}: not a valid model spec ({exc})") from exc
    else:
        prep = Preprocessing.from_bundle(bundle)
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(config.section("train")["threads"])
    try:
        session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise InputError(f"{onnx_path}: not a valid ONNX model ({first[:200]})") from exc
    x = prep.inputs(table)
    inp = session.get_inputs()[0]
    fixed = [d for d in inp.shape[1:]]
    if len(fixed) != len(prep.input_shape) or any(
            isinstance(d, int) and d != want for d, want in zip(fixed, prep.input_shape,
                                                                strict=False)):
        raise InputError(f"{onnx_path}: the model takes input {inp.shape}, but the data gives "
                         f"[batch, {', '.join(map(str, prep.input_shape))}]")
    batch = inp.shape[0] if isinstance(inp.shape[0], int) else BATCH
    try:
        outs = [session.run(None, {inp.name: x[i:i + batch]})[0]
                for i in range(0, len(x), batch)]
    except Exception as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise InputError(f"{onnx_path}: inference failed on data.test ({first[:200]})") from exc
    source: dict[str, Any] = {"path": str(onnx_path), "format": "onnx",
                              "onnx_sha256": sha256_file(onnx_path)}
    external = onnx_path.with_name(onnx_path.name + ".data")
    if external.is_file():
        source["external_data_sha256"] = sha256_file(external)
    return np.concatenate(outs) if outs else np.empty((0, len(prep.classes))), prep, source


def evaluate_path(path: Path, config: Config) -> dict[str, Any]:
    """Metrics of the model at ``path`` on the config's test set, as metrics.json has them."""
    if not path.exists():
        raise InputError(f"--model {path}: not found")
    bundle = load_data(config)
    table = bundle.test
    onnx_path = _onnx_file(path)
    if onnx_path is not None:
        logits, prep, source = _onnx_logits(onnx_path, config, table, bundle)
    else:
        logits, prep, source = _torch_logits(path, config, table)
    y = prep.targets(table)
    _check_logits(logits, len(y), len(prep.classes))
    if not np.isfinite(logits).all():
        raise InputError(f"{path}: the model produced NaN or infinite outputs on data.test")
    metrics = classification_metrics(y, logits.argmax(axis=1), prep.classes,
                                      loss=_loss(logits, y))
    return {"model": "evaluated", "source": source,
            "data": {"test": {"path": table.path.name, "sha256": table.sha256,
                              "rows": len(table.labels)}},
            **metrics}
