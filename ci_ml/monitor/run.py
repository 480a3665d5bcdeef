"""A monitoring run: resolve the inputs, read the window, test, decide, report, maybe trigger.

The click layer builds a ``MonitorRequest`` and calls ``run_monitor``; everything
with side effects (files, Prometheus, the CI system's API) is passed in, so the
tests drive the same code with a real Prometheus or a local stand-in of GitHub.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ci_ml.fsutil import atomic_write_json, atomic_write_text
from ci_ml.monitor.analyze import WindowStats, analyze
from ci_ml.monitor.interface import (
    HTML_NAME,
    REPORT_NAME,
    HealthSource,
    InputStats,
    MonitorInputError,
    Trigger,
    TriggerRequest,
)
from ci_ml.monitor.labels import DEFAULT_MAX_LABELS, read_labels
from ci_ml.monitor.logs import DEFAULT_MAX_LINE_BYTES, LogCounters, Window, log_files, read_log
from ci_ml.monitor.model import MonitoredModel
from ci_ml.monitor.policy import MonitorPolicy, decide
from ci_ml.monitor.report import MonitorReport, findings
from ci_ml.monitor.sources import CACHE_NAME, choose_reference, describe


@dataclass(frozen=True)
class MonitorRequest:
    logs: tuple[Path, ...]
    window: Window
    policy: MonitorPolicy
    out_dir: Path
    labels: tuple[Path, ...] = ()
    model: Path | None = None
    model_version: str | None = None
    reference: Path | None = None
    train: Path | None = None
    target: str | None = None
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
    max_labels: int = DEFAULT_MAX_LABELS
    html: bool = True


def _policy_json(policy: MonitorPolicy) -> dict[str, Any]:
    return {"window": policy.window, "min_rows": policy.min_rows,
            "min_labels": policy.min_labels, "alpha": policy.alpha,
            "correction": policy.correction.value, "psi": policy.psi,
            "max_drifted_features": policy.max_drifted_features,
            "prediction_psi": policy.prediction_psi,
            "max_unseen_share": policy.max_unseen_share,
            "max_accuracy_drop": policy.max_accuracy_drop,
            "max_error_increase": policy.max_error_increase,
            "error_rate": policy.error_rate,
            "latency": [{"quantile": s.quantile, "max_ms": s.max_ms} for s in policy.latency]}


def run_monitor(request: MonitorRequest, *, health: HealthSource | None = None,
                trigger: Trigger | None = None,
                progress: Callable[[str], None] = lambda _: None) -> MonitorReport:
    log_files(request.logs)   # every input is checked before anything is written
    labels = read_labels(request.labels, request.max_labels) if request.labels else None
    model = (MonitoredModel(request.model, request.model_version)
             if request.model is not None else None)
    source = choose_reference(explicit=request.reference, model=model, train=request.train,
                              target=request.target, cache=request.out_dir / CACHE_NAME)
    reference = source.load()
    if model is not None and reference.feature_order and \
            len(reference.feature_order) != len(model.features):
        raise MonitorInputError(f"the reference has {len(reference.feature_order)} features, "
                                f"the model {len(model.features)}: not this model's reference")
    progress(f"reference: {reference.source}")

    pending = labels.ids if labels else None
    counters = LogCounters()
    window = WindowStats(reference, labels.values if labels else None)
    for record in read_log(request.logs, request.window, model.identity if model else None,
                           counters, max_line_bytes=request.max_line_bytes, seen_ids=pending):
        window.add(record)
        if window.requests % 100_000 == 0:
            progress(f"read {window.requests:,} requests ...")
    analysis = analyze(window, request.policy)
    unknown = sorted(pending or ())
    stats = InputStats(
        files=tuple(str(p) for p in request.logs), lines=counters.lines,
        in_window=window.requests, rows=window.rows, outside_window=counters.outside_window,
        corrupt=counters.corrupt, corrupt_examples=tuple(counters.corrupt_examples),
        other_model=counters.other_model, other_models=dict(counters.other_models),
        failed=window.failed, bad_rows=window.bad_rows,
        labels=labels.rows if labels else 0, labels_matched=window.matched,
        labels_unknown=sum(1 for key in (labels.values if labels else {}) if key[0] in
                           (pending or ())),
        labels_unknown_examples=tuple(unknown[:5]),
        labels_bad=labels.bad if labels else 0,
        labels_duplicate=labels.duplicate if labels else 0)

    service = health.health(request.window.start, request.window.end) if health else \
        analysis.log_health
    decision = decide(analysis.features, analysis.predictions, analysis.quality, service,
                      window.rows, request.policy)
    digest = model.identity.digest if model else ""
    report = MonitorReport(
        model={"path": str(model.identity.path) if model else None, "digest": digest or None,
               "version": request.model_version},
        window=request.window, reference=reference, reference_origin=describe(source),
        inputs=stats, analysis=analysis, health=service, decision=decision,
        findings=findings(decision, stats, window.rows, request.policy.min_rows, digest),
        policy=_policy_json(request.policy))
    write_report(report, request)
    if trigger is not None and decision.retrain:
        result = trigger.fire(TriggerRequest(reason=decision.summary(),
                                             details=decision.to_json()))
        report = replace(report, trigger=result)
        write_report(report, request)
    return report


def write_report(report: MonitorReport, request: MonitorRequest) -> None:
    request.out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(request.out_dir / REPORT_NAME, report.to_json())
    if request.html:
        from ci_ml.monitor.html import render_monitor_html

        atomic_write_text(request.out_dir / HTML_NAME, render_monitor_html(report))
