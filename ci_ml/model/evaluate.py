"""``ci-ml evaluate --model PATH``: the training metrics, for any model, on the config's test set.

The gate compares a candidate with the model now in production; this computes the
production model's side with exactly the code that wrote the candidate's
``metrics.json``. PATH is a ci-ml model directory (``model.json`` plus
``model.safetensors``) or an ONNX model (a file, or a directory holding
``model.onnx``); neither can run code when loaded, and a pickle-based checkpoint is
refused with an explanation. An ONNX model is fed through ``ci_ml.model.inference``,
the path the server takes, with the card beside it (or, for a bare ONNX file, the
config's preprocessing, or one input per feature column as a team's own model takes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ci_ml.config import Config
from ci_ml.data.loader import DataBundle, Table, load_data
from ci_ml.errors import InputError
from ci_ml.fsutil import sha256_file
from ci_ml.model.card import CARD, WEIGHTS, ModelCard, read_card
from ci_ml.model.inference import OnnxModel, Prediction, decode, make_session
from ci_ml.model.metrics import score_predictions
from ci_ml.model.safety import refuse_pickle

EVALUATION = "evaluation.json"
BATCH = 512


def _onnx_file(path: Path) -> Path | None:
    if path.is_file() and path.suffix == ".onnx":
        return path
    if path.is_dir() and not (path / WEIGHTS).is_file() and (path / "model.onnx").is_file():
        return path / "model.onnx"
    return None


def _bare_card(onnx_path: Path, bundle: DataBundle) -> ModelCard:
    """A card for an ONNX file without one: the config's encoded input if the graph takes
    one float matrix of that width, else one input per feature column."""
    from ci_ml.model.byo import build_card
    from ci_ml.model.outputs import zoo_card
    from ci_ml.model.zoo import ModelSpec

    inputs = make_session(onnx_path).get_inputs()
    if len(inputs) == 1 and inputs[0].type in ("tensor(float)", "tensor(double)"):
        sample = [d for d in inputs[0].shape[1:]]
        if all(isinstance(d, int) for d in sample) and \
                int(np.prod(sample)) == bundle.preprocessor.width:
            spec = ModelSpec("onnx", bundle.input_shape, max(len(bundle.classes), 1))
            return zoo_card(bundle, spec)
    return build_card(onnx_path, bundle)


def _onnx_predict(onnx_path: Path, config: Config, bundle: DataBundle) -> tuple[
        Prediction, ModelCard, dict[str, Any]]:
    refuse_pickle(onnx_path)
    card_path = onnx_path.parent / CARD
    card = read_card(card_path) if card_path.is_file() else _bare_card(onnx_path, bundle)
    fits(card, bundle.test)
    model = OnnxModel(onnx_path, card, threads=int(config.section("train")["threads"]))
    pred = model.predict(bundle.test.columns, bundle.test.rows)
    source: dict[str, Any] = {"path": str(onnx_path), "format": "onnx",
                              "onnx_sha256": sha256_file(onnx_path)}
    external = onnx_path.with_name(onnx_path.name + ".data")
    if external.is_file():
        source["external_data_sha256"] = sha256_file(external)
    return pred, card, source


def _torch_predict(path: Path, config: Config, bundle: DataBundle) -> tuple[
        Prediction, ModelCard, dict[str, Any]]:
    import torch

    from ci_ml.model.persist import load_model
    from ci_ml.model.zoo import card_spec

    model, card = load_model(path, config.root)
    fits(card, bundle.test)
    if card.preprocessing is None:
        raise InputError(f"{path}: the card has no preprocessing to feed the PyTorch model")
    x, report = card.preprocessing.transform(bundle.test.columns, bundle.test.rows)
    x = x.reshape((len(x), *card.input_shape))
    torch.set_num_threads(int(config.section("train")["threads"]))
    try:
        with torch.no_grad():
            outs = [model(torch.from_numpy(x[i:i + BATCH])) for i in range(0, len(x), BATCH)]
    except RuntimeError as exc:
        raise InputError(f"data of shape {list(x.shape[1:])} does not fit the model: "
                         f"{str(exc).splitlines()[0]}") from exc
    raw = torch.cat(outs).numpy().astype(np.float64)
    pred = decode(card, {card.outputs.scores or "scores": raw}, len(raw), report, str(path))
    directory = path if path.is_dir() else path.parent
    source = {"path": str(path), "format": "ci-ml", "model": card_spec(card).name,
              "weights_sha256": sha256_file(directory / WEIGHTS)}
    return pred, card, source


def fits(card: ModelCard, table: Table) -> None:
    missing = sorted(set(card.features) - set(table.columns))
    if missing:
        raise InputError(f"data.test {table.path.name} does not fit the model's features "
                         f"({len(card.features)} columns; the data lacks {missing[0]!r})")


def evaluate_path(path: Path, config: Config) -> dict[str, Any]:
    """Metrics of the model at ``path`` on the config's test set, as metrics.json has them."""
    if not path.exists():
        raise InputError(f"--model {path}: not found")
    bundle = load_data(config)
    onnx_path = _onnx_file(path)
    if onnx_path is not None:
        pred, card, source = _onnx_predict(onnx_path, config, bundle)
    else:
        pred, card, source = _torch_predict(path, config, bundle)
    metrics = score_predictions(pred, card, bundle.test)
    table = bundle.test
    out: dict[str, Any] = {"model": "evaluated", "task": card.task, "source": source,
                           "data": {"test": {"path": table.path.name, "sha256": table.sha256,
                                             "rows": table.rows}},
                           **metrics}
    if pred.report is not None and (pred.report.unseen or pred.report.invalid):
        out["inputs"] = pred.report.to_json()
    return out
