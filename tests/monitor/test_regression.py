"""Regression: predicted values drift and the mean absolute error on late labels, on sklearn's
diabetes data (shipped with scikit-learn) and a linear model fitted on its training half."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from sklearn.datasets import load_diabetes
from sklearn.linear_model import LinearRegression

from ci_ml.monitor.analyze import WindowStats, analyze
from ci_ml.monitor.interface import PredictionReference, Task
from ci_ml.monitor.logs import Record
from ci_ml.monitor.policy import MonitorPolicy
from ci_ml.monitor.reference import build_reference, numeric_histogram


@pytest.fixture(scope="module")
def setup() -> tuple:  # type: ignore[type-arg]
    data = load_diabetes()
    x, y = data.data, data.target
    order = np.random.default_rng(0).permutation(len(y))
    train, test = order[:300], order[300:]
    model = LinearRegression().fit(x[train], y[train])
    test_pred = model.predict(x[test])
    features = list(data.feature_names)
    ref = build_reference({f: x[train, j].tolist() for j, f in enumerate(features)}, features,
                          source="diabetes train", task=Task.REGRESSION,
                          predictions=PredictionReference(
                              Task.REGRESSION, values=numeric_histogram(model.predict(x[train]))),
                          metrics={"mae": float(np.abs(test_pred - y[test]).mean())},
                          metric_rows=len(test))
    return ref, model, x[test], y[test]


def _window(ref, model, x, y, *, label_shift=0.0, value_shift=0.0):  # type: ignore[no-untyped-def]
    pred = model.predict(x) + value_shift
    labels = {(f"r{i}", 0): repr(float(t + label_shift)) for i, t in enumerate(y)}
    stats = WindowStats(ref, labels)
    now = datetime.now(UTC)
    for i, (row, p) in enumerate(zip(x, pred, strict=True)):
        stats.add(Record(f"r{i}", now - timedelta(seconds=i), 200, 1.0, "/predict",
                         [row.tolist()], [{"value": float(p)}]))
    return analyze(stats, MonitorPolicy(min_labels=50))


def test_clean_regression_traffic_is_quiet(setup: tuple) -> None:  # type: ignore[type-arg]
    analysis = _window(*setup)
    assert analysis.quality is not None and analysis.quality.metric == "mae"
    assert not analysis.quality.degraded
    assert analysis.predictions is not None and not analysis.predictions.drifted


def test_worse_labels_raise_the_error_and_shifted_values_drift(setup: tuple) -> None:  # type: ignore[type-arg]
    ref, model, x, y = setup
    worse = _window(ref, model, x, y, label_shift=40.0)
    assert worse.quality is not None and worse.quality.degraded
    assert worse.quality.value > 1.1 * (worse.quality.reference or 0)
    drifted = _window(ref, model, x, y, value_shift=60.0)
    assert drifted.predictions is not None and drifted.predictions.drifted
