"""The training profile stored beside the model card (``reference-profile.json``, written by
the data step) as the monitoring reference: read through ``ci_ml.monitor.profile``."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ci_ml.fsutil import atomic_write_json
from ci_ml.monitor.interface import ColumnKind, MonitorInputError
from ci_ml.monitor.logs import Window
from ci_ml.monitor.policy import MonitorPolicy
from ci_ml.monitor.profile import FORMAT, reference_from_profile
from ci_ml.monitor.run import MonitorRequest, run_monitor
from ci_ml.serve.model import ServedModel
from tests.monitor.conftest import WINDOW_ROWS
from tests.monitor.replay import Split, draw, log_lines, predict, repredict, write_log


def number_profile(values: np.ndarray) -> dict[str, Any]:
    """A number column as the profile format documents it (deciles, [a, b) bins)."""
    edges = np.unique(np.quantile(values, [i / 10 for i in range(1, 10)]))
    counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=edges.size + 1)
    return {"kind": "number", "rows": int(values.size), "missing_share": 0.0,
            "count": int(values.size), "mean": float(values.mean()), "std": float(values.std()),
            "min": float(values.min()), "max": float(values.max()),
            "histogram": {"edges": edges.tolist(), "shares": (counts / values.size).tolist()}}


def category_profile(labels: list[str], top: int = 200) -> dict[str, Any]:
    values, counts = np.unique(labels, return_counts=True)
    order = np.argsort(-counts)[:top]
    return {"kind": "category", "rows": len(labels), "missing_share": 0.0,
            "distinct": len(values),
            "frequencies": {str(values[i]): counts[i] / len(labels) for i in order}}


@pytest.fixture
def profiled_model(tmp_path: Path, trained: Path, digits_model: ServedModel,
                   train_split: Split, test_split: Split) -> Path:
    """A copy of the trained model directory with a stored training profile beside it."""
    model_dir = tmp_path / "model"
    shutil.copytree(trained / "out" / "candidate", model_dir)
    predicted = predict(digits_model, test_split.x)
    atomic_write_json(model_dir / "reference-profile.json", {
        "format": FORMAT, "rows": len(train_split.labels),
        "source": {"path": "train.csv", "sha256": "0" * 64},
        "columns": {f: number_profile(train_split.x[:, j])
                    for j, f in enumerate(train_split.features)},
        "target": category_profile(list(train_split.labels)),
        "prediction": category_profile(list(predicted))})
    return model_dir / "model.onnx"


def _run(model: Path, lines: list[str], window: Window, tmp_path: Path) -> Any:
    log = write_log(tmp_path / "requests.jsonl", lines)
    return run_monitor(MonitorRequest(logs=(log,), window=window, policy=MonitorPolicy(),
                                      out_dir=tmp_path / "out", model=model, html=False))


def test_the_stored_profile_is_the_reference_and_finds_a_shifted_feature(
        profiled_model: Path, digits_model: ServedModel, test_split: Split,
        train_split: Split, window: Window, tmp_path: Path) -> None:
    alarms = 0
    for seed in range(10):
        report = _run(profiled_model, log_lines(draw(test_split, digits_model, seed,
                                                     WINDOW_ROWS), digits_model.sha256),
                      window, tmp_path)
        assert report.reference_origin["kind"] == "stored"
        assert report.reference.source.startswith("stored training profile")
        alarms += bool(report.decision.reasons)
    assert alarms <= 1
    traffic = draw(test_split, digits_model, 0, WINDOW_ROWS)
    j = int(train_split.x.std(axis=0).argmax())
    traffic.rows[:, j] += train_split.x[:, j].std()
    repredict(traffic, digits_model)
    report = _run(profiled_model, log_lines(traffic, digits_model.sha256), window, tmp_path)
    assert [f.name for f in report.analysis.features if f.drifted] == [test_split.features[j]]
    # The quality reference comes from the model's own metrics.json.
    assert report.reference.metrics["accuracy"] > 0.5


def test_decile_bins_keep_the_partition_of_discrete_data() -> None:
    values = np.array([0.0] * 60 + [1.0] * 20 + [5.0] * 10 + [16.0] * 10)
    ref = reference_from_profile({"format": FORMAT, "rows": 100,
                                  "columns": {"px": number_profile(values)}}, "p.json", ["px"])
    (col,) = ref.columns
    assert col.kind is ColumnKind.NUMBER and col.histogram is not None
    edges, counts = np.asarray(col.histogram.edges), np.asarray(col.histogram.counts)
    again = np.bincount(np.searchsorted(edges, values, side="left"), minlength=counts.size)
    assert again.tolist() == counts.tolist() and counts[0] == 0 and counts[-1] == 0


def test_a_truncated_category_list_is_not_called_new() -> None:
    labels = [f"c{i}" for i in range(300)] * 2
    ref = reference_from_profile({"format": FORMAT, "rows": 600, "columns": {
        "city": category_profile(labels, top=200)}}, "p.json", ["city"])
    assert ref.columns[0].complete is False


@pytest.mark.parametrize("doc, message", [
    ({"format": "something/else"}, "not a monitoring reference nor a training profile"),
    ({"format": FORMAT, "columns": []}, "'columns' is not an object"),
    ({"format": FORMAT, "columns": {"px0": {"kind": "number", "rows": 3, "count": 3, "min": 0,
      "max": 1, "histogram": {"edges": [0.5], "shares": [1.0]}}}}, "no profile of the model"),
    ({"format": FORMAT, "columns": {"a": {"kind": "number", "rows": 3, "count": 3, "min": 0,
      "max": "x"}}}, "a.max is not a finite number"),
])
def test_malformed_profiles_are_input_errors(doc: dict, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(MonitorInputError, match=message):
        reference_from_profile(doc, "reference-profile.json", ["a", "px0", "px1"][
            :1 if "a" in doc.get("columns", {}) else 3])
