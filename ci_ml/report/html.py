"""report.html: the summary with plots, one self-contained file (PNG plots inlined as base64).

Plots: each gated metric across registry versions and the candidate; the prune
trade-off (trials, or base vs pruned); findings by scanner and severity. No
external resource is loaded, so the file opens offline and from a CI artifact.
"""

from __future__ import annotations

import base64
import io
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ci_ml.gate.interface import Decision, Evidence, Outcome, StagePolicy
from ci_ml.report.markdown import SHOWN_SEVERITIES, scalar_metrics
from ci_ml.resources import render_template, template_environment
from ci_ml.scan.interface import ScanStatus, Severity

SEVERITY_COLORS = {Severity.CRITICAL: "#7f0000", Severity.HIGH: "#d7301f",
                   Severity.MEDIUM: "#fc8d59", Severity.LOW: "#fdcc8a", Severity.INFO: "#9ecae1",
                   Severity.UNKNOWN: "#bdbdbd"}
DEFAULT_METRICS = ("accuracy", "macro_f1")


@dataclass(frozen=True)
class MetricPoint:
    """One model in the metric history: a registry version or the candidate."""

    label: str
    metrics: Mapping[str, Any]
    stages: tuple[str, ...] = ()


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=96, bbox_inches="tight",
                metadata={"Software": None})
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(width: float = 6.4, height: float = 3.2) -> Any:
    # The object API, not pyplot: no global state, no GUI backend, safe in any process.
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def history_plot(points: Sequence[MetricPoint], policy: StagePolicy) -> str | None:
    names = [b.metric for b in policy.metrics] + [r.metric for r in policy.regression]
    names = list(dict.fromkeys(names)) or [m for m in DEFAULT_METRICS]
    series = {n: [scalar_metrics(p.metrics).get(n) for p in points] for n in names}
    series = {n: v for n, v in series.items() if any(x is not None for x in v)}
    if not series or not points:
        return None
    fig = _figure()
    ax = fig.add_subplot()
    xs = list(range(len(points)))
    for name, values in series.items():
        pts = [(x, v) for x, v in zip(xs, values, strict=True) if v is not None]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
    for bound in policy.metrics:
        if bound.min is not None and bound.metric in series:
            ax.axhline(bound.min, linestyle="--", linewidth=0.8, color="grey")
    labels = [p.label + (f"\n({', '.join(p.stages)})" if p.stages else "") for p in points]
    ax.set_xticks(xs, labels, fontsize=8)
    ax.set_title("Metrics across registry versions and the candidate (dashed: minimum)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _png(fig)


def prune_plot(report: Mapping[str, Any] | None) -> str | None:
    if not isinstance(report, Mapping):
        return None
    trials = [t for t in report.get("trials", ()) if isinstance(t, Mapping)]
    points = [(t.get("onnx_bytes"), t.get("accuracy"), bool(t.get("chosen"))) for t in trials]
    points = [(b, a, c) for b, a, c in points if isinstance(b, int | float)
              and isinstance(a, int | float)]
    fig = _figure()
    ax = fig.add_subplot()
    if points:
        ax.scatter([p[0] for p in points], [p[1] for p in points], label="trials")
        chosen = [p for p in points if p[2]]
        if chosen:
            ax.scatter([chosen[0][0]], [chosen[0][1]], marker="*", s=200, label="chosen")
        ax.set_xlabel("ONNX size (bytes)")
        ax.set_ylabel("accuracy")
        ax.set_title("Pruning trade-off: accuracy vs model size")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        return _png(fig)
    base, pruned = report.get("base"), report.get("pruned")
    if not isinstance(base, Mapping) or not isinstance(pruned, Mapping):
        return None
    labels, ratios = [], []
    for label, get in (("latency b1", lambda m: (m.get("latency_ms") or {}).get("b1")),
                       ("latency b256", lambda m: (m.get("latency_ms") or {}).get("b256")),
                       ("ONNX size", lambda m: m.get("onnx_bytes"))):
        b, p = get(base), get(pruned)
        if isinstance(b, int | float) and isinstance(p, int | float) and b:
            labels.append(label)
            ratios.append(p / b)
    if not labels:
        return None
    ax.bar(labels, ratios, color="#3182bd")
    ax.axhline(1.0, color="grey", linestyle="--", linewidth=0.8)
    ax.set_ylabel("pruned / base")
    drop = report.get("accuracy_drop")
    extra = f" (accuracy drop {drop:g} points)" if isinstance(drop, int | float) else ""
    ax.set_title("Pruning: pruned model relative to the base" + extra)
    return _png(fig)


def findings_plot(decision: Decision, evidence: Evidence) -> str | None:
    if not evidence.scans:
        return None
    scanners = sorted(evidence.scans)
    kept: dict[str, Counter[Severity]] = {s: Counter() for s in scanners}
    waived: Counter[str] = Counter()
    if decision.waivers is not None:
        for f in decision.waivers.kept:
            kept.setdefault(f.scanner, Counter())[f.severity] += 1
        waived.update(s.finding.scanner for s in decision.waivers.suppressed)
    if not any(kept.values()) and not waived:
        return None
    fig = _figure(6.4, 0.6 + 0.5 * len(scanners))
    ax = fig.add_subplot()
    left = [0] * len(scanners)
    for sev in (*SHOWN_SEVERITIES, Severity.UNKNOWN):
        values = [kept[s][sev] for s in scanners]
        if any(values):
            ax.barh(scanners, values, left=left, color=SEVERITY_COLORS[sev], label=sev.label)
            left = [a + b for a, b in zip(left, values, strict=True)]
    values = [waived[s] for s in scanners]
    if any(values):
        ax.barh(scanners, values, left=left, color="white", edgecolor="grey", hatch="//",
                label="waived")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=8, loc="lower right")
    ax.set_xlabel("findings")
    ax.set_title("Findings by scanner and severity")
    return _png(fig)


def render_html(decision: Decision, evidence: Evidence, policy: StagePolicy,
                history: Sequence[MetricPoint]) -> str:
    env = template_environment(autoescape=True)
    prod = evidence.stage_models.get("production")
    base_metrics = scalar_metrics(prod.metrics) if prod else {}
    metrics = [{"name": k, "value": v, "production": base_metrics.get(k),
                "delta": v - base_metrics[k] if k in base_metrics else None}
               for k, v in scalar_metrics(evidence.metrics).items()]
    scans = [{"name": n, "status": r.status.value, "ok": r.status is ScanStatus.OK,
              "error": r.error, "tool": f"{r.tool} {r.tool_version}".strip()}
             for n, r in sorted(evidence.scans.items())]
    waivers = decision.waivers_json()
    return render_template(
        env, "report.html.j2",
        decision=decision, passed=decision.outcome is Outcome.PASS, blocking=decision.blocking,
        rules=decision.rules, metrics=metrics, production=prod, scans=scans, waivers=waivers,
        plots={"history": history_plot(history, policy),
               "prune": prune_plot(evidence.prune_report),
               "findings": findings_plot(decision, evidence)},
    )
