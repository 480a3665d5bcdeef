"""Gate rules for regression models: the metric's direction by default, against the stage."""

from __future__ import annotations

import datetime

from ci_ml.gate.evaluate import evaluate
from ci_ml.gate.interface import Direction, Evidence, StageModel, StagePolicy, default_direction


def _evidence(metrics: dict, stage_metrics: dict | None) -> Evidence:
    stage = {"staging": StageModel("staging", 1, "sha256:" + "a" * 64, stage_metrics)} \
        if stage_metrics is not None else {}
    return Evidence(metrics=metrics, data_report={"checks": []}, scans={}, waivers=(),
                    today=datetime.date(2026, 1, 1), model_digest="sha256:" + "b" * 64,
                    stage_models=stage, passed={}, prune_report=None)


def _policy(section: dict) -> StagePolicy:
    return StagePolicy.from_config("staging", {"required_scans": [], **section})


def test_directions_of_the_built_in_metrics() -> None:
    for metric in ("rmse", "mae", "loss", "max_error"):
        assert default_direction(metric) is Direction.LOWER
    for metric in ("r2", "accuracy", "macro_f1"):
        assert default_direction(metric) is Direction.HIGHER


def test_rmse_max_and_r2_min() -> None:
    policy = _policy({"metrics": {"rmse": {"max": 3.0}, "r2": {"min": 0.8}}})
    good = evaluate(_evidence({"rmse": 2.7, "r2": 0.87}, None), policy)
    assert good.passed
    bad = evaluate(_evidence({"rmse": 3.4, "r2": 0.79}, None), policy)
    assert {r.rule for r in bad.blocking} == {"metric.rmse", "metric.r2"}


def test_regression_against_the_stage_model_takes_lower_rmse_as_better() -> None:
    policy = _policy({"regression": {"rmse": {"tolerance": 0.05, "relative": True},
                                     "r2": {"tolerance": 0.01}}})
    better = evaluate(_evidence({"rmse": 2.5, "r2": 0.9}, {"rmse": 2.8, "r2": 0.88}), policy)
    assert better.passed, [r.message for r in better.blocking]
    worse = evaluate(_evidence({"rmse": 3.0, "r2": 0.86}, {"rmse": 2.8, "r2": 0.88}), policy)
    blocked = {r.rule: r for r in worse.blocking}
    assert set(blocked) == {"regression.rmse", "regression.r2"}
    assert "lower is better" in blocked["regression.rmse"].message
    assert "7.1% worse" in blocked["regression.rmse"].message


def test_an_explicit_direction_still_wins() -> None:
    policy = _policy({"regression": {"rmse": {"direction": "higher"}}})
    decision = evaluate(_evidence({"rmse": 3.0}, {"rmse": 2.8}), policy)
    assert decision.passed
