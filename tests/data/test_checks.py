"""Per-column data checks on real data, with planted problems, through the library and the CLI."""

from __future__ import annotations

import datetime
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from ci_ml.config import load_config
from ci_ml.data.checks import run_checks
from ci_ml.data.drift import category_drift, chi2_sf, psi
from tests.conftest import run_cli
from tests.datasets.projects import shipped

PENGUINS_CONFIG = """\
data:
  train: data/train.csv
  test: data/test.csv
  target: species
model:
  name: mlp
"""


def _report(project: Path) -> dict[str, dict]:
    config = load_config(project / "ci-ml.yaml")
    return {c.name: c.to_json() for c in run_checks(config).checks}


@pytest.fixture
def penguins(tmp_path: Path) -> Path:
    """The Palmer penguins, train = the first 280 rows, test = the rest (all three islands
    are in both; the test set is mostly Chinstrap and Gentoo)."""
    root = tmp_path / "penguins"
    (root / "data").mkdir(parents=True)
    lines = shipped("palmerpenguins", "data", "penguins.csv").read_text().splitlines()
    rng = np.random.default_rng(0)
    order = rng.permutation(len(lines) - 1) + 1
    (root / "data" / "train.csv").write_text(
        "\n".join([lines[0], *(lines[i] for i in order[:275])]) + "\n")
    (root / "data" / "test.csv").write_text(
        "\n".join([lines[0], *(lines[i] for i in order[275:])]) + "\n")
    (root / "ci-ml.yaml").write_text(PENGUINS_CONFIG)
    return root


def _edit(path: Path, row: int, column: str, value: str) -> None:
    lines = path.read_text().splitlines()
    header = lines[0].split(",")
    cells = lines[row].split(",")
    cells[header.index(column)] = value
    lines[row] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")


def test_example_data_passes_every_check(example_project: Path) -> None:
    checks = _report(example_project)
    assert all(c["passed"] for c in checks.values()), checks
    assert checks["train_test_overlap"]["value"] == 0.0


def test_penguins_pass_and_report_per_column(penguins: Path) -> None:
    config = load_config(penguins / "ci-ml.yaml")
    report = run_checks(config)
    assert report.passed, report.failed
    doc = report.to_json()
    assert doc["columns"]["island"]["kind"] == "category"
    assert doc["columns"]["sex"]["train"]["missing_share"] > 0
    drift = next(c for c in doc["checks"] if c["name"] == "feature_drift")
    assert drift["details"]["per_column"]["island"]["test"] == "chi-square"
    assert drift["details"]["per_column"]["body_mass_g"]["test"] == "psi"


def test_new_categories_out_of_range_and_invalid_values_per_column(penguins: Path) -> None:
    test = penguins / "data" / "test.csv"
    for row in range(1, 11):
        _edit(test, row, "island", "Anvers")            # an island never seen in training
    for row in range(11, 16):
        _edit(test, row, "body_mass_g", "99000")        # a 99 kg penguin
    _edit(test, 20, "flipper_length_mm", "long")        # a word in a number column
    checks = _report(penguins)
    new = checks["new_categories"]
    assert not new["passed"] and new["details"]["columns"] == {"test:island": round(10 / 69, 6)}
    assert new["details"]["values"] == {"test:island": {"Anvers": 10}}
    rng = checks["out_of_range"]
    # Five planted, plus what the split itself puts past the training range.
    assert not rng["passed"] and rng["details"]["columns"]["test:body_mass_g"] >= 5 / 69 - 1e-6
    bad = checks["invalid_values"]
    assert not bad["passed"] and bad["details"]["columns"] == {"test:flipper_length_mm":
                                                               round(1 / 69, 6)}


def test_missing_share_growth_beyond_sampling_noise(penguins: Path) -> None:
    test = penguins / "data" / "test.csv"
    for row in range(1, 30):
        _edit(test, row, "bill_depth_mm", "NA")
    checks = _report(penguins)
    assert not checks["missing_increase"]["passed"]
    assert "test:bill_depth_mm" in checks["missing_values"]["details"]["columns"]
    assert list(checks["missing_increase"]["details"]["columns"]) == ["bill_depth_mm"]


def test_identifier_columns_are_found_named_and_kept_out(penguins: Path) -> None:
    # What pandas' to_csv(index=True) and a database export add to real data.
    for split in ("train", "test"):
        path = penguins / "data" / f"{split}.csv"
        lines = path.read_text().splitlines()
        offset = 0 if split == "train" else 275
        out = [",".join(["", "penguin_id", "recorded", lines[0]])]
        for i, line in enumerate(lines[1:]):
            n = offset + i
            when = datetime.datetime(2008, 1, 1) + datetime.timedelta(minutes=37 * n)
            out.append(f"{n},P-{n * 7919 % 100003:05d},{when.isoformat()},{line}")
        path.write_text("\n".join(out) + "\n")
    # The empty header name is refused: name it as pandas would.
    for split in ("train", "test"):
        path = penguins / "data" / f"{split}.csv"
        path.write_text("Unnamed: 0" + path.read_text())
    config = load_config(penguins / "ci-ml.yaml")
    report = run_checks(config)
    ids = report.to_json()["identifiers"]
    assert set(ids) == {"Unnamed: 0", "penguin_id", "recorded"}, ids
    assert "row index" in ids["Unnamed: 0"] or "identifier" in ids["Unnamed: 0"]
    assert "timestamp used as a key" in ids["recorded"]
    assert report.schema is not None
    assert {c.name for c in report.schema.features}.isdisjoint(ids)
    # A leak is found although every row got a fresh id: ids are left out of the row hash.
    test = penguins / "data" / "test.csv"
    train_rows = (penguins / "data" / "train.csv").read_text().splitlines()
    leaked = [",".join(["999" + r.split(",")[0], "X-1", "2011-01-01T00:00:00",
                        *r.split(",")[3:]]) for r in train_rows[1:21]]
    test.write_text(test.read_text() + "\n".join(leaked) + "\n")
    checks = _report(penguins)
    assert checks["train_test_overlap"]["details"]["rows"] == 20


def test_planted_leakage_is_caught(example_project: Path) -> None:
    train = (example_project / "data" / "train.csv").read_text().splitlines()
    test = (example_project / "data" / "test.csv").read_text().splitlines()
    # Copy 40 training rows into the test set: 40/400 = 10% overlap.
    (example_project / "data" / "test.csv").write_text("\n".join(test + train[1:41]) + "\n")
    checks = _report(example_project)
    assert not checks["train_test_overlap"]["passed"]
    assert abs(checks["train_test_overlap"]["value"] - 40 / 400) < 1e-9


def test_planted_drift_is_caught(example_project: Path) -> None:
    path = example_project / "data" / "test.csv"
    lines = path.read_text().splitlines()
    out = [lines[0]]
    for line in lines[1:]:
        cells = line.split(",")
        # Brighten the first 20 pixels of every test image: a sensor change.
        cells[:20] = [str(min(16.0, float(v) + 8)) for v in cells[:20]]
        out.append(",".join(cells))
    path.write_text("\n".join(out) + "\n")
    checks = _report(example_project)
    assert not checks["feature_drift"]["passed"]
    assert checks["feature_drift"]["details"]["drifted"]


def test_categorical_drift_needs_significance_and_effect() -> None:
    same = category_drift({"a": 500, "b": 500}, {"a": 510, "b": 490})
    assert same.p_value > 0.5 and same.cramers_v < 0.05
    shifted = category_drift({"a": 500, "b": 500}, {"a": 900, "b": 100})
    assert shifted.p_value < 1e-10 and shifted.cramers_v > 0.3
    new = category_drift({"a": 50, "b": 50}, {"a": 30, "b": 30, "c": 40})
    assert new.dof == 2 and new.p_value < 1e-6


def test_chi2_survival_matches_scipy() -> None:
    from scipy.stats import chi2

    for dof in (1, 2, 3, 7, 30, 200):
        for x in (0.01, 0.5, 1.0, 3.84, 10.0, 45.0, 250.0, 1000.0):
            assert chi2_sf(x, dof) == pytest.approx(chi2.sf(x, dof), rel=1e-9, abs=1e-300)


def test_psi_is_zero_for_same_distribution_and_large_for_shift() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=5000)
    assert psi(a, rng.normal(size=5000)) < 0.02
    assert psi(a, rng.normal(loc=2.0, size=5000)) > 1.0


def test_data_check_exits_1_and_the_gate_still_weighs_the_report(example_project: Path) -> None:
    shutil.copy(example_project / "data" / "train.csv", example_project / "data" / "test.csv")
    result = run_cli("data", "check", "--out", "out", cwd=example_project)
    assert result.code == 1, result.output
    assert "data check failed: train_test_overlap" in result.stderr
    report = json.loads((example_project / "out" / "data-report.json").read_text())
    assert report["passed"] is False
    # Cached: asking again gives the same answer without recomputing.
    again = run_cli("data", "check", "--out", "out", cwd=example_project)
    assert again.code == 1 and "0 ran, 1 from cache" in again.stdout
