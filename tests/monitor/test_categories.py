"""A new category, on real tabular data with categories and missing values (palmerpenguins).

The reference is profiled from a training split without the island Torgersen; the
traffic is the held-out rows sent as named fields (missing values as JSON null), as
a client would send them. Torgersen penguins are a category the model never saw.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from ci_ml.monitor.interface import ColumnKind
from ci_ml.monitor.logs import Window
from ci_ml.monitor.policy import MonitorPolicy
from ci_ml.monitor.report import MonitorReport
from ci_ml.monitor.run import MonitorRequest, run_monitor

FEATURES = ("island", "bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g",
            "sex", "year")


def _value(text: str) -> object:
    if text == "NA":
        return None
    try:
        return float(text) if "." in text else int(text)
    except ValueError:
        return text


def _log(path: Path, rows: list[dict[str, str]], end: datetime) -> Path:
    with open(path, "w") as fh:
        for i, row in enumerate(rows):
            fh.write(json.dumps({
                "id": f"p{i}", "ts": (end - timedelta(seconds=len(rows) - i)).isoformat(),
                "model_digest": "0" * 64, "model_version": "3", "route": "/predict",
                "status": 200, "latency_ms": 2.5,
                "inputs": [{f: _value(row[f]) for f in FEATURES}],
                "outputs": [{"label": row["species"]}]}) + "\n")
    return path


def _run(train: Path, rows: list[dict[str, str]], window: Window, tmp_path: Path
         ) -> MonitorReport:
    log = _log(tmp_path / "requests.jsonl", rows, window.end)
    return run_monitor(MonitorRequest(logs=(log,), window=window, policy=MonitorPolicy(),
                                      out_dir=tmp_path / "out", train=train, target="species",
                                      html=False))


def test_a_new_category_is_flagged_and_named(penguins: tuple[Path, list[dict[str, str]]],
                                             window: Window, tmp_path: Path) -> None:
    train, held_out = penguins
    report = _run(train, held_out, window, tmp_path)
    island = next(f for f in report.analysis.features if f.name == "island")
    assert island.kind is ColumnKind.CATEGORY and island.unseen
    assert island.unseen_examples == ("Torgersen",)
    torgersen = sum(1 for r in held_out if r["island"] == "Torgersen")
    assert island.unseen_share == pytest.approx(torgersen / len(held_out))
    reasons = {(r.code, r.subject): r for r in report.decision.reasons}
    assert ("unseen_values", "island") in reasons
    assert "'Torgersen'" in reasons[("unseen_values", "island")].message
    assert report.decision.retrain
    # Missing values (NA in the data, null in the requests) are counted as missing, not drift.
    sex = next(f for f in report.analysis.features if f.name == "sex")
    assert sex.missing_share > 0 and not sex.unseen


def test_held_out_rows_of_known_categories_raise_nothing(
        penguins: tuple[Path, list[dict[str, str]]], window: Window, tmp_path: Path) -> None:
    train, held_out = penguins
    known = [r for r in held_out if r["island"] != "Torgersen"]
    report = _run(train, known, window, tmp_path)
    assert report.inputs.rows == len(known)
    assert report.decision.reasons == (), report.decision.summary()
    kinds = {f.name: f.kind for f in report.analysis.features}
    assert kinds["island"] is ColumnKind.CATEGORY and kinds["sex"] is ColumnKind.CATEGORY
    assert kinds["bill_length_mm"] is ColumnKind.NUMBER
