"""monitor-report.json and the findings, in the scanners' ``Finding`` form (scanner ``monitoring``).

Every reason of the decision is a finding; so is what the reading of the inputs
had to skip (corrupt lines, another model's lines, labels for unknown ids, a
window too small to judge), so a broken log is never a quiet pass.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ci_ml.monitor.analyze import Analysis
from ci_ml.monitor.interface import (
    FINDING_SCANNER,
    Action,
    ColumnDrift,
    Decision,
    InputStats,
    PredictionDrift,
    Quality,
    Reason,
    Reference,
    ServiceHealth,
    TriggerResult,
)
from ci_ml.monitor.logs import Window
from ci_ml.scan.interface import Confidence, Finding, Location, Severity

REPORT_VERSION = 1
SEVERITY = {"feature_drift": Severity.MEDIUM, "prediction_drift": Severity.HIGH,
            "quality": Severity.HIGH, "unseen_values": Severity.MEDIUM,
            "missing_values": Severity.MEDIUM, "slo": Severity.HIGH}


def finite(value: float | None, digits: int = 6) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), digits)


def _finding(rule: str, subject: str, severity: Severity, title: str, model: str,
             **raw: Any) -> Finding:
    return Finding(id=f"{rule}:{subject}", rule=rule, scanner=FINDING_SCANNER, severity=severity,
                   title=title, location=Location(path=subject, digest=model or None),
                   confidence=Confidence.HIGH, raw=raw)


def findings(decision: Decision, inputs: InputStats, rows: int, min_rows: int,
             model: str) -> tuple[Finding, ...]:
    out = [_finding(r.code, r.subject, SEVERITY.get(r.code, Severity.MEDIUM), r.message, model,
                    action=r.action.value, value=finite(r.value), threshold=r.threshold)
           for r in decision.reasons]
    if rows < min_rows:
        out.append(_finding("window_too_small", "window", Severity.LOW,
                            f"{rows} rows in the window, fewer than monitor.min_rows "
                            f"({min_rows}): drift is not judged", model, rows=rows))
    if inputs.corrupt:
        out.append(_finding("corrupt_log_lines", "request-log", Severity.LOW,
                            f"{inputs.corrupt} request log line(s) skipped as corrupt or "
                            f"truncated (first: {'; '.join(inputs.corrupt_examples[:3])})", model,
                            count=inputs.corrupt, examples=list(inputs.corrupt_examples)))
    if inputs.other_model:
        names = ", ".join(f"{k}: {v}" for k, v in list(inputs.other_models.items())[:5])
        out.append(_finding("other_model", "request-log", Severity.INFO,
                            f"{inputs.other_model} request log line(s) of another model skipped "
                            f"({names})", model, count=inputs.other_model,
                            models=dict(inputs.other_models)))
    if inputs.bad_rows:
        out.append(_finding("bad_rows", "request-log", Severity.LOW,
                            f"{inputs.bad_rows} logged row(s) do not match the model's features",
                            model, count=inputs.bad_rows))
    if inputs.labels_unknown:
        out.append(_finding("labels_unknown_ids", "labels", Severity.MEDIUM,
                            f"{inputs.labels_unknown} label(s) name request ids that no logged "
                            f"request of this model carries: not used (e.g. "
                            f"{', '.join(inputs.labels_unknown_examples[:3])})", model,
                            count=inputs.labels_unknown))
    if inputs.labels_bad:
        out.append(_finding("labels_bad_rows", "labels", Severity.LOW,
                            f"{inputs.labels_bad} label row(s) could not be read", model,
                            count=inputs.labels_bad))
    return tuple(out)


def _feature_json(f: ColumnDrift) -> dict[str, Any]:
    return {
        "name": f.name, "kind": f.kind.value, "test": f.test, "statistic": finite(f.statistic),
        "p_value": finite(f.p_value, 12), "p_adjusted": finite(f.p_adjusted, 12),
        "psi": finite(f.psi), "drifted": f.drifted, "rows": f.rows,
        "missing_share": finite(f.missing_share),
        "reference_missing_share": finite(f.reference_missing_share),
        "unseen_share": finite(f.unseen_share), "unseen_examples": list(f.unseen_examples),
        "unseen_p_adjusted": finite(f.unseen_p, 12), "unseen": f.unseen,
        "window_mean": finite(f.window_mean), "reference_mean": finite(f.reference_mean),
        "bins": list(f.bins), "reference_shares": [finite(v) for v in f.reference_shares],
        "window_shares": [finite(v) for v in f.window_shares],
    }


def _predictions_json(p: PredictionDrift | None) -> dict[str, Any] | None:
    if p is None:
        return None
    return {"task": p.task.value, "test": p.test, "statistic": finite(p.statistic),
            "p_value": finite(p.p_value, 12), "psi": finite(p.psi), "rows": p.rows,
            "drifted": p.drifted, "reference": p.reference_source, "bins": list(p.bins),
            "reference_shares": [finite(v) for v in p.reference_shares],
            "window_shares": [finite(v) for v in p.window_shares]}


def _quality_json(q: Quality | None) -> dict[str, Any] | None:
    if q is None:
        return None
    return {"metric": q.metric, "value": finite(q.value), "reference": finite(q.reference),
            "labels": q.labels, "p_value": finite(q.p_value, 12), "degraded": q.degraded}


def health_json(h: ServiceHealth | None) -> dict[str, Any] | None:
    if h is None:
        return None
    return {"source": h.source, "requests": finite(h.requests), "note": h.note,
            "checks": [{"name": c.name, "value": finite(c.value), "limit": c.limit,
                        "unit": c.unit, "breached": c.breached} for c in h.checks]}


def inputs_json(s: InputStats) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else dict(v) if isinstance(v, Mapping) else v)
            for k, v in s.__dict__.items()}


@dataclass(frozen=True)
class MonitorReport:
    model: Mapping[str, Any]
    window: Window
    reference: Reference
    reference_origin: Mapping[str, Any]
    inputs: InputStats
    analysis: Analysis
    health: ServiceHealth | None
    decision: Decision
    findings: tuple[Finding, ...]
    policy: Mapping[str, Any]
    trigger: TriggerResult | None = None

    def to_json(self) -> dict[str, Any]:
        a = self.analysis
        drifted = [f.name for f in a.features if f.drifted]
        return {
            "version": REPORT_VERSION,
            "decision": self.decision.to_json(),
            "summary": self.decision.summary(),
            "model": dict(self.model),
            "window": {**self.window.to_json(), "rows": self.inputs.rows,
                       "requests": self.inputs.in_window},
            "reference": {**self.reference_origin, "source": self.reference.source,
                          "rows": self.reference.rows,
                          "metrics": dict(self.reference.metrics)},
            "inputs": inputs_json(self.inputs),
            "drift": {"correction": self.policy.get("correction"),
                      "alpha": self.policy.get("alpha"), "psi": self.policy.get("psi"),
                      "drifted": drifted, "features": [_feature_json(f) for f in a.features]},
            "predictions": _predictions_json(a.predictions),
            "quality": _quality_json(a.quality),
            "service": health_json(self.health),
            "findings": [f.to_json() for f in self.findings],
            "trigger": self.trigger.to_json() if self.trigger else None,
        }


def reason_lines(reasons: Sequence[Reason]) -> list[str]:
    return [f"{'retrain' if r.action is Action.RETRAIN else 'alert'}: {r.message}"
            for r in reasons]
