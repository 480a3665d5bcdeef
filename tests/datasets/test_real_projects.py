"""Real projects from `ci-ml init` to a gate decision, the config untouched.

Three public data sets with categorical columns and missing values, as packages on the
index ship them: the Palmer penguins (palmerpenguins: species from island, sex and four
measurements, NA in five columns), ISLP's Hitters (the new league of a baseball player
from his record; Salary missing for 59 players) and vega_datasets' cars (miles per gallon,
a regression target with missing values; Origin a category, Name a near-unique string, a
date column; as Parquet). Each directory starts with its single data file only.
"""

from __future__ import annotations

import pytest
import yaml

from tests.datasets.projects import Built

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("real-projects")]


def _config(built: Built) -> dict:
    return yaml.safe_load((built.root / "ci-ml.yaml").read_text())


def _common(built: Built, task: str) -> dict:
    assert built.init.code == 0, built.init.output
    assert built.run.code == 0, built.run.output
    decision = built.json("decision.json")
    assert decision["decision"] == "pass", decision
    report = built.json("data-report.json")
    assert report["passed"], [c for c in report["checks"] if not c["passed"]]
    assert report["task"] == task
    # init split the single file, seeded and stratified, and wrote both halves.
    data = _config(built)["data"]
    assert ".train." in data["train"] and ".test." in data["test"]
    assert data["task"] == task
    card = built.json("candidate/model.json")
    assert card["format"] == "ci-ml/2" and card["task"] == task
    reference = built.json("candidate/reference-profile.json")
    assert reference["format"] == "ci-ml/reference-profile/1"
    assert set(reference["columns"]) == {f["name"] for f in card["fields"]}
    return card


def test_penguins_classification_with_categories_and_missing_values(penguins: Built) -> None:
    card = _common(penguins, "classification")
    assert "split data/penguins.csv: 275 train and 69 test rows" in penguins.init.stdout
    fields = {f["name"]: f for f in card["fields"]}
    assert fields["island"]["kind"] == "category"
    assert set(fields["island"]["categories"]) == {"Biscoe", "Dream", "Torgersen"}
    assert fields["sex"]["nullable"] and fields["bill_length_mm"]["nullable"]
    assert card["classes"] == ["Adelie", "Chinstrap", "Gentoo"]
    metrics = penguins.json("metrics.json")
    assert metrics["accuracy"] >= 0.95, metrics["accuracy"]
    assert metrics["samples"] == 69


def test_hitters_missing_salary_and_league_categories(hitters: Built) -> None:
    card = _common(hitters, "classification")
    fields = {f["name"]: f for f in card["fields"]}
    assert _config(hitters)["data"]["target"] == "NewLeague"   # init's guess: the last column
    assert fields["Salary"]["nullable"] and fields["League"]["kind"] == "category"
    report = hitters.json("data-report.json")
    missing = next(c for c in report["checks"] if c["name"] == "missing_values")
    assert missing["details"]["columns"]["train:Salary"] > 0.1   # 59 of 322 players
    assert hitters.json("metrics.json")["accuracy"] >= 0.9


def test_cars_regression_from_parquet_with_an_identifier(cars: Built) -> None:
    card = _common(cars, "regression")
    config = _config(cars)
    assert config["data"]["train"].endswith(".parquet")
    assert set(config["policy"]["staging"]["metrics"]) == {"r2"}
    assert config["policy"]["staging"]["regression"]["rmse"]["relative"] is True
    report = cars.json("data-report.json")
    assert list(report["identifiers"]) == ["Name"]
    assert "Name" not in {f["name"] for f in card["fields"]}
    assert {f["name"]: f["kind"] for f in card["fields"]}["Year"] == "datetime"
    assert card["target_scale"] is not None and card["classes"] == []
    metrics = cars.json("metrics.json")
    assert metrics["r2"] >= 0.7 and 0 < metrics["rmse"] < 5 and metrics["mae"] < metrics["rmse"]
    # Eight cars have no mpg: dropped from training and scoring, and counted.
    dropped = metrics["rows_without_target"]
    assert dropped["train"] + dropped["test"] == 8
    assert (cars.out / "plots" / "predicted-vs-actual.png").stat().st_size > 1000
    prune = cars.json("prune-report.json")
    assert prune["pruned"] is False
    html = (cars.out / "report.html").read_text()
    assert "predicted vs actual" in html
