"""Data checks on real data (the example's digits) with planted problems."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from ci_ml.config import load_config
from ci_ml.data.checks import psi, run_checks
from ci_ml.data.loader import load_data
from tests.conftest import run_cli


def _report(project: Path) -> dict[str, dict]:
    config = load_config(project / "ci-ml.yaml")
    report = run_checks(load_data(config), config.section("data")["checks"])
    return {c.name: c.to_json() for c in report.checks}


def test_example_data_passes_every_check(example_project: Path) -> None:
    checks = _report(example_project)
    assert all(c["passed"] for c in checks.values()), checks
    assert checks["train_test_overlap"]["value"] == 0.0


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


def test_missing_values_are_counted(example_project: Path) -> None:
    path = example_project / "data" / "train.csv"
    lines = path.read_text().splitlines()
    lines[1] = "," + lines[1].split(",", 1)[1]
    path.write_text("\n".join(lines) + "\n")
    checks = _report(example_project)
    assert not checks["missing_values_train"]["passed"]
    assert checks["missing_values_train"]["value"] > 0


def test_psi_is_zero_for_same_distribution_and_large_for_shift() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=5000)
    assert psi(a, rng.normal(size=5000)) < 0.02
    assert psi(a, rng.normal(loc=2.0, size=5000)) > 1.0


def test_failed_data_check_blocks_the_gate(example_project: Path) -> None:
    shutil.copy(example_project / "data" / "train.csv", example_project / "data" / "test.csv")
    result = run_cli("data", "check", "--out", "out", cwd=example_project)
    assert result.code == 0  # the check step reports; the gate decides
    assert "train_test_overlap" in result.stderr
