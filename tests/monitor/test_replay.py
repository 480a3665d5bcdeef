"""Replayed traffic from the example's test split, clean and with injected faults.

Each window is WINDOW_ROWS requests drawn from the test split with a seed, answered
by the trained example model; the reference is computed from the training split the
config names (the example's model carries no stored profile). A clean window must
not alarm (at most one false alarm in 20 seeds, all checks on: drift, predictions,
unseen values, accuracy on true late labels, latency); every fault must be flagged
and named.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from ci_ml.monitor.interface import Decision, Status
from ci_ml.monitor.logs import Window
from ci_ml.monitor.policy import MonitorPolicy
from ci_ml.monitor.report import MonitorReport
from ci_ml.monitor.run import MonitorRequest, run_monitor
from ci_ml.serve.model import ServedModel
from tests.monitor.conftest import WINDOW_ROWS
from tests.monitor.replay import (
    Split,
    Traffic,
    draw,
    drop_accuracy,
    log_lines,
    repredict,
    write_labels,
    write_log,
)

SEEDS = range(20)


@pytest.fixture
def monitor(trained: Path, digits_model: ServedModel, window: Window, tmp_path: Path
            ) -> Callable[..., MonitorReport]:
    def run(traffic: Traffic, labels: list[str] | None = None, **policy: object
            ) -> MonitorReport:
        log = write_log(tmp_path / "requests.jsonl",
                        log_lines(traffic, digits_model.sha256, end=window.end))
        label_files = ((write_labels(tmp_path / "labels.csv", traffic.ids, labels),)
                       if labels is not None else ())
        request = MonitorRequest(
            logs=(log,), labels=label_files, window=window, policy=MonitorPolicy(**policy),
            out_dir=tmp_path / "out", model=trained / "out" / "candidate" / "model.onnx",
            train=trained / "data" / "train.csv", target="label", html=False)
        return run_monitor(request)
    return run


def codes(decision: Decision) -> set[tuple[str, str]]:
    return {(r.code, r.subject) for r in decision.reasons}


def test_twenty_seeds_of_clean_traffic_raise_at_most_one_false_alarm(
        monitor: Callable[..., MonitorReport], digits_model: ServedModel,
        test_split: Split) -> None:
    alarms = {}
    for seed in SEEDS:
        traffic = draw(test_split, digits_model, seed, WINDOW_ROWS)
        report = monitor(traffic, labels=traffic.truth)
        assert report.inputs.rows == WINDOW_ROWS and report.inputs.labels_matched == WINDOW_ROWS
        assert report.analysis.quality is not None and report.analysis.predictions is not None
        if report.decision.reasons:
            alarms[seed] = report.decision.summary()
    assert len(alarms) <= 1, alarms


def test_one_feature_shifted_by_one_standard_deviation_is_named(
        monitor: Callable[..., MonitorReport], digits_model: ServedModel, test_split: Split,
        train_split: Split, tmp_path: Path) -> None:
    std = train_split.x.std(axis=0)
    # Every feature that varies, one at a time; the clean seed-0 window otherwise.
    for j in [j for j in range(len(std)) if std[j] > 0.5][::4]:
        traffic = draw(test_split, digits_model, 0, WINDOW_ROWS)
        traffic.rows[:, j] += std[j]
        repredict(traffic, digits_model)
        report = monitor(traffic)
        name = test_split.features[j]
        assert report.decision.status is Status.RETRAIN
        assert ("feature_drift", name) in codes(report.decision), report.decision.summary()
        drifted = [f.name for f in report.analysis.features if f.drifted]
        assert drifted == [name], drifted
        written = json.loads((tmp_path / "out" / "monitor-report.json").read_text())
        assert written["drift"]["drifted"] == [name]
        assert written["decision"]["retrain"] is True


def test_a_prior_shift_of_the_classes_is_prediction_drift(
        monitor: Callable[..., MonitorReport], digits_model: ServedModel,
        test_split: Split) -> None:
    # Digits 0-4 four times as frequent as 5-9 (80 % of traffic instead of 50 %): a resample
    # of the split, which holds too few rows per class for such a window without repeats.
    for seed in range(3):
        traffic = draw(test_split, digits_model, seed, 2 * WINDOW_ROWS,
                       weights=lambda label: 4.0 if int(label) < 5 else 1.0, replace=True)
        report = monitor(traffic)
        assert ("prediction_drift", "predictions") in codes(report.decision), \
            report.decision.summary()
        p = report.analysis.predictions
        assert p is not None and p.drifted and p.psi >= 0.1


def test_labels_that_drop_accuracy_by_five_points_are_flagged(
        monitor: Callable[..., MonitorReport], digits_model: ServedModel,
        test_split: Split) -> None:
    # All 360 rows of the split: a 5-point drop from the shared model's ~87 % accuracy is
    # 2.8 standard errors there (at 150 labels it would be 1.8, below the 1 % level).
    for seed in range(3):
        traffic = draw(test_split, digits_model, seed, len(test_split.labels))
        clean = monitor(traffic, labels=traffic.truth)
        assert clean.analysis.quality is not None and not clean.analysis.quality.degraded
        report = monitor(traffic, labels=drop_accuracy(traffic, 5, digits_model.card.classes,
                                                       seed))
        q = report.analysis.quality
        assert q is not None and q.degraded
        assert clean.analysis.quality.value - q.value == pytest.approx(0.05, abs=0.004)
        assert codes(report.decision) == {("quality", "accuracy")}


def test_a_latency_slo_breach_is_an_alert_not_a_retrain(
        monitor: Callable[..., MonitorReport], digits_model: ServedModel,
        test_split: Split) -> None:
    traffic = draw(test_split, digits_model, 0, WINDOW_ROWS)
    traffic.latency_ms[::20] = 800.0       # 5 % of requests take 0.8 s; the p99 SLO is 500 ms
    report = monitor(traffic)
    assert codes(report.decision) == {("slo", "latency_p99")}
    assert report.decision.status is Status.ALERT and not report.decision.retrain
    check = next(c for c in report.health.checks if c.name == "latency_p99")  # type: ignore[union-attr]
    assert check.breached and check.value is not None and 780 <= check.value <= 820
