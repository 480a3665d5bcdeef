"""/predict rows for graphs with several named inputs, int64 and string values, and feature
names; the regression task; what the decoder's row schema promises, it decodes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ci_ml.serve.decoders.interface import RequestError
from ci_ml.serve.model import ServedModel
from tests.serve.factory import make_mixed_model, make_model, mixed_expected


def test_named_rows_of_several_inputs(tmp_path: Path) -> None:
    model = ServedModel(make_mixed_model(tmp_path / "m"))
    rows = [{"x": [1.0, 2.0], "n": [1], "s": ["a"]}, {"x": [0.5, -1], "n": [4], "s": ["zzz"]}]
    batch = model.decoder.decode_rows(rows)
    assert batch.feed["n"].dtype == np.int64 and batch.feed["s"].dtype == object
    result = model.predict(batch)
    logits = mixed_expected(np.array([[1.0, 2.0], [0.5, -1.0]]), np.array([1, 4]), ["a", "zzz"])
    assert result.labels == ["no" if a >= b else "yes" for a, b in logits]
    assert batch.rows == rows                                 # logged as received


@pytest.mark.parametrize("row, message", [
    ({"x": [1.0, 2.0], "n": [1]}, "missing field 's'"),
    ({"x": [1.0, 2.0], "n": [1], "s": ["a"], "extra": 1}, "1 unknown field"),
    ({"x": [1.0, 2.0], "n": [1.5], "s": ["a"]}, r"inputs\[0\].n\[0\]: expected an integer"),
    ({"x": [1.0, 2.0], "n": [2**63], "s": ["a"]}, "int64 range"),
    ({"x": [1.0, 2.0], "n": [1], "s": [3]}, "expected a string"),
    ({"x": [1.0, 2.0], "n": [1], "s": ["a" * 5000]}, "longer than 4096"),
    ([1.0, 2.0, 1, "a"], "expected an object keyed by input name"),
])
def test_bad_named_rows(tmp_path: Path, row: object, message: str) -> None:
    model = ServedModel(make_mixed_model(tmp_path / "m"))
    with pytest.raises(RequestError, match=message) as err:
        model.decoder.decode_rows([row])
    assert err.value.status == 422


def test_rows_keyed_by_feature_name(tmp_path: Path) -> None:
    path = make_model(tmp_path / "m", sample_shape=(4,))
    model = ServedModel(path)
    by_name = model.decoder.decode_rows([{"f0": 1, "f1": 2, "f2": 3, "f3": 4}])
    by_list = model.decoder.decode_rows([[1, 2, 3, 4]])
    np.testing.assert_array_equal(by_name.feed["input"], by_list.feed["input"])


def test_regression_card(tmp_path: Path) -> None:
    model = ServedModel(make_mixed_model(tmp_path / "m", task="regression"))
    result = model.predict(model.decoder.decode_rows([{"x": [1, 2], "n": [2], "s": ["b"]}]))
    assert result.labels is None and result.values is not None
    np.testing.assert_allclose(result.values, mixed_expected(
        np.array([[1.0, 2.0]]), np.array([2]), ["b"])[:, 1], rtol=1e-6)
    assert result.rows() == [{"value": pytest.approx(float(result.values[0]))}]


def test_bounds_follow_the_preprocessing(tmp_path: Path) -> None:
    """Standardized with std 2 and scale 2: the stated bound keeps every value finite in
    float32, and the value just past it is refused."""
    model = ServedModel(make_model(tmp_path / "m", standardize=True))
    schema = model.decoder.row_schema()
    flat = next(s for s in schema["oneOf"] if s["items"].get("type") == "number")
    bound = flat["items"]["maximum"]
    assert bound == 1e12                                       # the default cap binds here
    model.decoder.decode_rows([[bound, -bound, 0, 1]])
    with pytest.raises(RequestError, match="beyond"):
        model.decoder.decode_rows([[bound * 1.01, 0, 0, 1]])


def test_unknown_input_format_is_a_card_error(tmp_path: Path) -> None:
    from ci_ml.errors import InputError

    path = make_model(tmp_path / "m")
    card = json.loads((path.parent / "model.json").read_text())
    card["input_format"] = "parquet"
    (path.parent / "model.json").write_text(json.dumps(card))
    with pytest.raises(InputError, match="input_format 'parquet' is not one of rows, tensor"):
        ServedModel(path)


def test_workers_follow_the_containers_cpu_quota(tmp_path: Path) -> None:
    from ci_ml.serve.settings import ServeSettings, cgroup_cpu_quota

    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_quota(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_quota(tmp_path) is None
    assert ServeSettings(workers=3).worker_count == 3
    assert 1 <= ServeSettings(workers=0).worker_count <= 8


def test_a_new_input_format_plugs_in_without_the_http_layer(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A format registered in DECODERS, whose card also says how to read the outputs (here a
    target scale), serves /predict and the protocol through the unchanged server."""
    import http.client
    from collections.abc import Mapping, Sequence
    from typing import Any

    from ci_ml.serve import decoders
    from ci_ml.serve.decoders.interface import Batch, Predictions, TensorSpec
    from ci_ml.serve.decoders.tensor import TensorDecoder
    from ci_ml.serve.server import load_model, start_background
    from ci_ml.serve.settings import ServeSettings

    class Scaled(TensorDecoder):
        name = "scaled"

        def read_outputs(self, outputs: Mapping[str, np.ndarray], batch: Batch
                         ) -> Predictions | None:
            (out,) = outputs.values()
            return Predictions(values=np.asarray(out, dtype=np.float64)[:, 0] * 10 + 5)

    def factory(card: Mapping[str, Any], inputs: Sequence[TensorSpec],
                limits: decoders.DecoderLimits) -> decoders.InputDecoder:
        return Scaled(inputs)

    monkeypatch.setitem(decoders.DECODERS, "scaled", factory)
    path = make_mixed_model(tmp_path / "m", task="regression")
    card = json.loads((path.parent / "model.json").read_text())
    (path.parent / "model.json").write_text(json.dumps({**card, "input_format": "scaled"}))
    settings = ServeSettings(port=0)
    with start_background(load_model(path, settings), settings) as srv:
        host, port = srv.url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.request("POST", "/predict", body=json.dumps(
            {"inputs": [{"x": [1, 2], "n": [2], "s": ["b"]}]}).encode(),
            headers={"Content-Type": "application/json"})
        doc = json.loads(conn.getresponse().read())
    raw = mixed_expected(np.array([[1.0, 2.0]]), np.array([2]), ["b"])[0, 1]
    assert doc["predictions"] == [pytest.approx(raw * 10 + 5, rel=1e-6)]
