"""ServedModel: loading the ONNX + model.json contract, pre-processing, predictions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ci_ml.errors import InputError
from ci_ml.serve.model import ServedModel
from tests.serve.factory import expected, make_model

RAW = np.array([[1.0, 2.0, 3.0, 4.0], [-4.0, 0.0, 8.0, 1.5], [0.0, 0.0, 0.0, 0.0]])


def predict(model: ServedModel, raw: np.ndarray) -> tuple[list[str], np.ndarray]:
    result = model.predict(model.decoder.decode_rows(raw.tolist()))
    assert result.labels is not None and result.probabilities is not None
    return result.labels, result.probabilities


def test_signature_comes_from_graph_and_card(tiny_model: Path) -> None:
    model = ServedModel(tiny_model)
    (spec,) = model.decoder.protocol_inputs()
    assert (spec.name, model.output_name) == ("input", "logits")
    assert spec.shape == (-1, 1, 2, 2) and spec.datatype == "FP32"
    assert model.fixed_batch is None
    assert model.card.classes == ("a", "b", "c") and model.decoder.describe()["scale"] == 2.0


@pytest.mark.parametrize("standardize", [False, True])
def test_predictions_match_numpy(tmp_path: Path, standardize: bool) -> None:
    model = ServedModel(make_model(tmp_path, standardize=standardize))
    labels, probs = predict(model, RAW)
    want_labels, want_probs = expected(RAW, standardize=standardize)
    assert labels == want_labels
    np.testing.assert_allclose(probs, want_probs, rtol=1e-5)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)


def test_fixed_batch_graph_runs_in_padded_chunks(tmp_path: Path) -> None:
    model = ServedModel(make_model(tmp_path, batch=2))
    assert model.fixed_batch == 2
    labels, probs = predict(model, RAW)          # 3 rows through a batch-2 graph
    assert labels == expected(RAW)[0] and probs.shape == (3, 3)


def test_directory_is_accepted(tiny_model: Path) -> None:
    assert ServedModel(tiny_model.parent).path == tiny_model


def test_missing_model(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="ONNX model not found"):
        ServedModel(tmp_path / "nope.onnx")


def test_missing_card(tmp_path: Path) -> None:
    path = make_model(tmp_path, write_card=False)
    with pytest.raises(InputError, match="model.json.*not found"):
        ServedModel(path)


def test_pickle_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(b"\x80\x04\x95")
    with pytest.raises(InputError, match="pickle"):
        ServedModel(path)


def test_not_onnx(tiny_model: Path) -> None:
    tiny_model.write_bytes(b"this is not a protobuf")
    with pytest.raises(InputError, match="not a loadable ONNX model"):
        ServedModel(tiny_model)


@pytest.mark.parametrize("change, message", [
    ({"classes": ["a", "b"]}, "3 classes, model.json lists 2"),
    ({"features": ["x"]}, "1 features listed"),
    ({"scale": 0}, "'scale' must be a positive number"),
    ({"mean": [0.0] * 4, "std": None}, "set together"),
    ({"mean": [0.0] * 3, "std": [1.0] * 3}, "'mean' has 3 values"),
    ({"classes": "oops"}, "model.json lists 4"),
])
def test_inconsistent_card(tiny_model: Path, change: dict[str, object], message: str) -> None:
    card_path = tiny_model.parent / "model.json"
    card = json.loads(card_path.read_text())
    card.update(change)
    card_path.write_text(json.dumps(card))
    with pytest.raises(InputError, match=message):
        ServedModel(tiny_model)
