"""report.html: the story of the run, one self-contained file a browser opens offline.

One section per step, with its evidence: the data checks (each check, per column where
the check names one), training (the loss and accuracy curve, the confusion matrix),
pruning (base against the candidate at every batch size measured, and which model is the
candidate and why), the candidate's metrics across the registry's versions, the findings
of every scanner, and every gate rule. The wording is summary.md's (``ci_ml.report.story``
and ``ci_ml.report.markdown`` share it). Charts are inline SVG and the PNGs the steps
drew, so rendering needs neither matplotlib nor any network: the gate's core install
writes it.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ci_ml.gate.interface import Decision, Evidence, Outcome, StagePolicy
from ci_ml.report.markdown import SHOWN_SEVERITIES, scalar_metrics
from ci_ml.report.story import candidate_files, curve_points, read_story, short
from ci_ml.resources import render_template, template_environment
from ci_ml.scan.interface import ScanStatus, Severity

SEVERITY_COLORS = {Severity.CRITICAL: "#7f0000", Severity.HIGH: "#d7301f",
                   Severity.MEDIUM: "#fc8d59", Severity.LOW: "#fdcc8a", Severity.INFO: "#9ecae1",
                   Severity.UNKNOWN: "#bdbdbd"}
SHOWN_FINDINGS = 100
CURVE_W, CURVE_H = 560.0, 160.0


@dataclass(frozen=True)
class MetricPoint:
    """One model in the metric history: a registry version or the candidate."""

    label: str
    metrics: Mapping[str, Any]
    stages: tuple[str, ...] = ()


def _history(points: Sequence[MetricPoint], policy: StagePolicy) -> dict[str, Any]:
    names = [b.metric for b in policy.metrics] + [r.metric for r in policy.regression]
    names = list(dict.fromkeys(names)) or ["accuracy", "macro_f1"]
    rows = [{"label": p.label, "stages": ", ".join(p.stages),
             "cells": [scalar_metrics(p.metrics).get(n) for n in names]} for p in points]
    return {"names": names, "rows": rows}


def _curves(story: Any) -> dict[str, Any] | None:
    """SVG polylines of the training curve: losses on one scale, accuracy on 0..1."""
    if story is None or len(story.epochs) < 1:
        return None
    losses = [e.train_loss for e in story.epochs] + [e.val_loss for e in story.epochs
                                                     if e.val_loss is not None]
    low, high = 0.0, max(losses)
    return {
        "width": CURVE_W, "height": CURVE_H, "high": high,
        "train_loss": curve_points([e.train_loss for e in story.epochs], CURVE_W, CURVE_H,
                                   low, high),
        "val_loss": curve_points([e.val_loss for e in story.epochs], CURVE_W, CURVE_H, low, high),
        "val_accuracy": curve_points([e.val_accuracy for e in story.epochs], CURVE_W, CURVE_H,
                                     0.0, 1.0),
    }


def _predicted(metrics: Mapping[str, Any]) -> dict[str, Any] | None:
    """A regression candidate's test predictions against the truth (metrics.json's sample),
    as SVG points: the diagonal is a perfect prediction."""
    pairs = metrics.get("predicted_vs_actual")
    if not isinstance(pairs, Mapping):
        return None
    actual = [float(v) for v in pairs.get("actual", ()) if isinstance(v, int | float)]
    predicted = [float(v) for v in pairs.get("predicted", ()) if isinstance(v, int | float)]
    if not actual or len(actual) != len(predicted):
        return None
    low, high = min(actual + predicted), max(actual + predicted)
    span = (high - low) or 1.0
    size = CURVE_H * 1.5

    def at(v: float) -> float:
        return (v - low) / span * size

    return {"size": size, "low": low, "high": high, "n": len(actual),
            "points": [(round(at(a), 1), round(size - at(p), 1))
                       for a, p in zip(actual, predicted, strict=True)]}


def _findings(decision: Decision, evidence: Evidence) -> dict[str, Any]:
    kept: dict[str, Counter[Severity]] = {s: Counter() for s in evidence.scans}
    waived: Counter[str] = Counter()
    listed = []
    if decision.waivers is not None:
        for f in decision.waivers.kept:
            kept.setdefault(f.scanner, Counter())[f.severity] += 1
            listed.append({"scanner": f.scanner, "severity": f.severity.label, "id": f.id,
                           "title": f.title, "where": f.location.describe(), "waived": ""})
        for s in decision.waivers.suppressed:
            waived[s.finding.scanner] += 1
            f = s.finding
            listed.append({"scanner": f.scanner, "severity": f.severity.label, "id": f.id,
                           "title": f.title, "where": f.location.describe(),
                           "waived": s.waiver.id})
    order = {sev.label: i for i, sev in enumerate((*SHOWN_SEVERITIES, Severity.UNKNOWN))}
    listed.sort(key=lambda f: (order.get(f["severity"], 99), f["scanner"], f["id"]))
    severities = list(SHOWN_SEVERITIES)
    rows = []
    for name, result in sorted(evidence.scans.items()):
        per = kept.get(name, Counter())
        rows.append({"name": name, "ok": result.status is ScanStatus.OK,
                     "status": result.status.value, "error": result.error,
                     "tool": f"{result.tool} {result.tool_version}".strip(),
                     "counts": [per[s] for s in severities], "waived": waived[name]})
    return {"severities": [{"label": s.label, "color": SEVERITY_COLORS[s]} for s in severities],
            "rows": rows, "listed": listed[:SHOWN_FINDINGS], "total": len(listed)}


def render_html(decision: Decision, evidence: Evidence, policy: StagePolicy,
                history: Sequence[MetricPoint], out_dir: Path | None = None) -> str:
    env = template_environment(autoescape=True)
    prod = evidence.stage_models.get("production")
    base_metrics = scalar_metrics(prod.metrics) if prod else {}
    metrics = [{"name": k, "value": v, "production": base_metrics.get(k),
                "delta": v - base_metrics[k] if k in base_metrics else None}
               for k, v in scalar_metrics(evidence.metrics).items()]
    story = read_story(out_dir or Path("/nonexistent"), evidence.data_report,
                       evidence.prune_report)
    training = story.training if out_dir is not None else None
    return render_template(
        env, "report.html.j2",
        decision=decision, passed=decision.outcome is Outcome.PASS, blocking=decision.blocking,
        rules=decision.rules, metrics=metrics, production=prod, short=short,
        candidate=evidence.metrics, waivers=decision.waivers_json(),
        history=_history(history, policy), data=story.data, training=training,
        curves=_curves(training), pruning=story.pruning,
        predicted=_predicted(evidence.metrics),
        candidate_files=candidate_files(out_dir) if out_dir is not None else [],
        findings=_findings(decision, evidence),
        monitoring=_monitoring(out_dir),
    )


def _monitoring(out_dir: Path | None) -> dict[str, Any] | None:
    """The monitoring section, when ``ci-ml monitor`` left its report in the out dir (its
    plots need matplotlib, which the gate's lean install may not have: then tables only)."""
    from ci_ml.extras import module_available
    from ci_ml.monitor.html import monitor_context
    from ci_ml.monitor.interface import REPORT_NAME

    path = out_dir / REPORT_NAME if out_dir is not None else None
    if path is None or not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("decision"), dict):
        return None
    return monitor_context(doc, plots=module_available("matplotlib"))
