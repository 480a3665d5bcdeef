"""The Open Inference Protocol through a real protocol client: tritonclient's HTTP client.

The client is used as written for Triton and KServe: binary tensor data by default, JSON
on request, errors read from the protocol's {"error": ...} body.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

tritonclient_http = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402

from ci_ml.serve.server import RunningServer, load_model, start_background  # noqa: E402
from ci_ml.serve.settings import Limits, ServeSettings  # noqa: E402
from tests.serve.factory import expected, make_mixed_model, make_model, mixed_expected  # noqa: E402

RAW = np.array([[1.0, 2.0, 3.0, 4.0], [-4.0, 0.0, 8.0, 1.5]], dtype=np.float32)


def _serve(path: Path) -> RunningServer:
    settings = ServeSettings(port=0, limits=Limits(max_batch=8))
    return start_background(load_model(path, settings), settings)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    srv = _serve(make_model(tmp_path_factory.mktemp("oip") / "m"))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    srv = _serve(make_mixed_model(tmp_path_factory.mktemp("oip-mixed") / "m"))
    yield srv
    srv.stop()


def client(srv: RunningServer) -> object:
    return tritonclient_http.InferenceServerClient(url=srv.url.removeprefix("http://"))


def tensor(name: str, arr: np.ndarray, datatype: str, binary: bool = True) -> object:
    t = tritonclient_http.InferInput(name, list(arr.shape), datatype)
    t.set_data_from_numpy(arr, binary_data=binary)
    return t


def test_health_and_metadata(tiny: RunningServer) -> None:
    c = client(tiny)
    assert c.is_server_live() and c.is_server_ready() and c.is_model_ready("model")
    assert not c.is_model_ready("other")
    assert c.get_server_metadata()["name"] == "ci-ml"
    meta = c.get_model_metadata("model")
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 2, 2]}]
    assert [o["name"] for o in meta["outputs"]] == ["predictions", "probabilities"]


@pytest.mark.parametrize("binary", [True, False])
def test_infer_matches_the_model(tiny: RunningServer, binary: bool) -> None:
    c = client(tiny)
    outputs = None if binary else [tritonclient_http.InferRequestedOutput(n, binary_data=False)
                                   for n in ("predictions", "probabilities")]
    result = c.infer("model", [tensor("input", RAW.reshape(2, 1, 2, 2), "FP32", binary)],
                     outputs=outputs, request_id="req-7")
    labels, probs = expected(RAW.astype(np.float64))
    assert [v.decode() if isinstance(v, bytes) else v
            for v in result.as_numpy("predictions").tolist()] == labels
    np.testing.assert_allclose(result.as_numpy("probabilities"), probs, atol=1e-5)
    response = result.get_response()
    assert response["id"] == "req-7" and response["model_name"] == "model"


def test_several_named_inputs_of_three_dtypes(mixed: RunningServer) -> None:
    c = client(mixed)
    meta = c.get_model_metadata("mixed")
    assert [(i["name"], i["datatype"]) for i in meta["inputs"]] == [
        ("x", "FP32"), ("n", "INT64"), ("s", "BYTES")]
    x = np.array([[1.0, 2.0], [0.5, -1.0], [3.0, 3.0]], dtype=np.float32)
    n = np.array([[1], [4], [-2]], dtype=np.int64)
    s = np.array([["a"], ["b"], ["zzz"]], dtype=object)
    result = c.infer("mixed", [tensor("x", x, "FP32"), tensor("n", n, "INT64"),
                               tensor("s", s, "BYTES")])
    logits = mixed_expected(x.astype(np.float64), n, ["a", "b", "zzz"])
    want = ["no" if row[0] >= row[1] else "yes" for row in logits]
    got = [v.decode() for v in result.as_numpy("predictions").tolist()]
    assert got == want and result.get_response()["model_version"] == "3"


@pytest.mark.parametrize("name, inputs, status, message", [
    ("other", None, "404", "unknown model"),
    ("model", [("input", np.zeros((1, 4), np.float32), "FP32")], "400", "shape must be"),
    ("model", [("input", np.zeros((1, 1, 2, 2), np.float64), "FP64")], "400",
     "datatype must be FP32"),
    ("model", [("nope", np.zeros((1, 1, 2, 2), np.float32), "FP32")], "400", "unknown input"),
    ("model", [("input", np.full((1, 1, 2, 2), np.nan, np.float32), "FP32")], "422",
     "non-finite"),
    ("model", [("input", np.zeros((9, 1, 2, 2), np.float32), "FP32")], "413",
     "exceeds the limit of 8"),
])
def test_errors_in_the_protocols_form(tiny: RunningServer, name: str,
                                      inputs: list[tuple[str, np.ndarray, str]] | None,
                                      status: str, message: str) -> None:
    c = client(tiny)
    given = inputs or [("input", RAW.reshape(2, 1, 2, 2), "FP32")]
    with pytest.raises(InferenceServerException) as err:
        c.infer(name, [tensor(n, a, d) for n, a, d in given])
    assert err.value.status() == status and message in err.value.message()


def test_regression_outputs_values(tmp_path: Path) -> None:
    srv = _serve(make_mixed_model(tmp_path / "m", task="regression"))
    try:
        x = np.array([[1.0, 2.0]], dtype=np.float32)
        n = np.array([[2]], dtype=np.int64)
        s = np.array([["b"]], dtype=object)
        result = client(srv).infer("mixed", [tensor("x", x, "FP32"), tensor("n", n, "INT64"),
                                             tensor("s", s, "BYTES")])
        want = mixed_expected(x.astype(np.float64), n, ["b"])[:, 1]
        np.testing.assert_allclose(result.as_numpy("predictions"), want, rtol=1e-6)
    finally:
        srv.stop()
