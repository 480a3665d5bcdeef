"""The ``monitor:`` policy and the decision: a pure function of what was measured.

``decide(analysis, health, policy)`` names every reason retraining is due (drift of
features or predictions, values never seen in training, quality on late labels)
or the service needs attention (SLO breaches), each with its value and threshold.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ci_ml.monitor.interface import (
    Action,
    ColumnDrift,
    Decision,
    PredictionDrift,
    Quality,
    Reason,
    ServiceHealth,
    Status,
)
from ci_ml.monitor.stats import Correction


@dataclass(frozen=True)
class LatencySlo:
    quantile: float
    max_ms: float

    @property
    def name(self) -> str:
        return f"latency_p{self.quantile * 100:g}".replace(".", "_")


@dataclass(frozen=True)
class MonitorPolicy:
    window: str = "24h"
    min_rows: int = 100
    min_labels: int = 100
    alpha: float = 0.01
    correction: Correction = Correction.HOLM
    psi: float = 0.2
    max_drifted_features: int = 0
    prediction_psi: float = 0.1
    max_missing_increase: float = 0.1
    max_unseen_share: float = 0.01
    max_accuracy_drop: float = 0.03
    max_error_increase: float = 0.1
    error_rate: float | None = 0.01
    latency: tuple[LatencySlo, ...] = (LatencySlo(0.99, 500.0),)
    min_requests: int = 20

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> MonitorPolicy:
        drift = section.get("drift", {})
        slo = section.get("slo", {})
        quality = section.get("quality", {})
        return cls(
            window=str(section.get("window", cls.window)),
            min_rows=int(section.get("min_rows", cls.min_rows)),
            min_labels=int(section.get("min_labels", cls.min_labels)),
            alpha=float(drift.get("alpha", cls.alpha)),
            correction=Correction(drift.get("correction", cls.correction.value)),
            psi=float(drift.get("psi", cls.psi)),
            max_drifted_features=int(drift.get("max_features", cls.max_drifted_features)),
            prediction_psi=float(drift.get("prediction_psi", cls.prediction_psi)),
            max_missing_increase=float(drift.get("missing_increase", cls.max_missing_increase)),
            max_unseen_share=float(section.get("unseen", {}).get("max_share",
                                                                 cls.max_unseen_share)),
            max_accuracy_drop=float(quality.get("max_accuracy_drop", cls.max_accuracy_drop)),
            max_error_increase=float(quality.get("max_error_increase", cls.max_error_increase)),
            error_rate=(None if slo.get("error_rate", cls.error_rate) is None
                        else float(slo.get("error_rate", cls.error_rate))),
            latency=tuple(LatencySlo(float(x["quantile"]), float(x["max_ms"]))
                          for x in slo.get("latency", [{"quantile": 0.99, "max_ms": 500.0}])),
            min_requests=int(slo.get("min_requests", cls.min_requests)),
        )


def _feature_reasons(features: Sequence[ColumnDrift], policy: MonitorPolicy) -> list[Reason]:
    reasons = []
    drifted = sorted((f for f in features if f.drifted), key=lambda f: (f.p_adjusted, -f.psi))
    if len(drifted) > policy.max_drifted_features:
        for f in drifted:
            reasons.append(Reason(
                "feature_drift", f.name, Action.RETRAIN, f.psi, policy.psi,
                f"{f.name}: drifted ({f.test} {f.statistic:.3g}, adjusted p {f.p_adjusted:.2g}, "
                f"PSI {f.psi:.3f} >= {policy.psi:g})"))
    for f in features:
        if f.unseen:
            what = ("values never seen in training" if f.unseen_examples and f.kind.value ==
                    "category" else "values outside the training range")
            shown = f" (e.g. {', '.join(repr(x) for x in f.unseen_examples[:3])})" \
                if f.unseen_examples else ""
            reasons.append(Reason(
                "unseen_values", f.name, Action.RETRAIN, f.unseen_share, policy.max_unseen_share,
                f"{f.name}: {f.unseen_share:.1%} {what}{shown}"))
        increase = f.missing_share - f.reference_missing_share
        if increase > policy.max_missing_increase:
            reasons.append(Reason(
                "missing_values", f.name, Action.RETRAIN, increase, policy.max_missing_increase,
                f"{f.name}: missing in {f.missing_share:.1%} of rows (training: "
                f"{f.reference_missing_share:.1%})"))
    return reasons


def _prediction_reason(p: PredictionDrift) -> Reason:
    return Reason("prediction_drift", "predictions", Action.RETRAIN, p.psi, 0.0,
                  f"predictions drifted from {p.reference_source} ({p.test} {p.statistic:.3g}, "
                  f"p {p.p_value:.2g}, PSI {p.psi:.3f})")


def _quality_reason(q: Quality, policy: MonitorPolicy) -> Reason:
    if q.metric == "accuracy":
        return Reason("quality", "accuracy", Action.RETRAIN, q.value,
                      (q.reference or 0.0) - policy.max_accuracy_drop,
                      f"accuracy on {q.labels} late labels is {q.value:.3f}, "
                      f"{(q.reference or 0.0) - q.value:.3f} below the reference "
                      f"{q.reference:.3f} (p {q.p_value:.2g})")
    return Reason("quality", q.metric, Action.RETRAIN, q.value,
                  (q.reference or 0.0) * (1 + policy.max_error_increase),
                  f"{q.metric} on {q.labels} late labels is {q.value:.4g}, reference "
                  f"{q.reference:.4g} (p {q.p_value:.2g})")


def decide(features: Sequence[ColumnDrift], predictions: PredictionDrift | None,
           quality: Quality | None, health: ServiceHealth | None, rows: int,
           policy: MonitorPolicy) -> Decision:
    reasons: list[Reason] = []
    enough = rows >= policy.min_rows
    if enough:
        reasons += _feature_reasons(features, policy)
        if predictions is not None and predictions.drifted:
            reasons.append(_prediction_reason(predictions))
    if quality is not None and quality.degraded:
        reasons.append(_quality_reason(quality, policy))
    if health is not None:
        for check in health.checks:
            if check.breached and check.value is not None:
                reasons.append(Reason(
                    "slo", check.name, Action.ALERT, check.value, check.limit,
                    f"{check.name} {check.value:.4g} {check.unit} over the SLO "
                    f"{check.limit:g} {check.unit} ({health.source})"))
    if any(r.action is Action.RETRAIN for r in reasons):
        status = Status.RETRAIN
    elif reasons:
        status = Status.ALERT
    elif not enough:
        status = Status.INSUFFICIENT_DATA
    else:
        status = Status.OK
    return Decision(status, tuple(reasons))
