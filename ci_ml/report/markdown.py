"""summary.md: the pull-request comment / job summary. The verdict comes first."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ci_ml.gate.interface import Decision, Outcome
from ci_ml.report.findings import severity_counts
from ci_ml.scan.interface import ScanResult, ScanStatus


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_summary(decision: Decision, metrics: Mapping[str, Any],
                   scans: Mapping[str, ScanResult]) -> str:
    icon = "PASS" if decision.outcome is Outcome.PASS else "BLOCKED"
    lines = [f"## ci-ml gate: {icon} for {decision.stage}", ""]
    if decision.blocking:
        lines.append("Blocking:")
        lines += [f"- {_escape(r.message)}" for r in decision.blocking]
        lines.append("")
    model_metrics = [(k, v) for k, v in metrics.items() if isinstance(v, int | float)
                     and k not in ("samples",)]
    if model_metrics:
        lines += ["### Model", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4f} |" for k, v in model_metrics]
        lines.append("")
    counts = severity_counts(scans)
    lines += ["### Findings", "", "| scanner | status | " + " | ".join(counts) + " |",
              "|---|---|" + "---|" * len(counts)]
    for name, result in sorted(scans.items()):
        per = {s: 0 for s in counts}
        for f in result.findings:
            per[f.severity.label] += 1
        status = "ok" if result.status is ScanStatus.OK else "**did not run**"
        lines.append(f"| {name} | {status} | " + " | ".join(str(per[s]) for s in counts) + " |")
    lines += ["", "### Rules", "", "| rule | outcome | detail |", "|---|---|---|"]
    lines += [f"| {r.rule} | {r.outcome.value} | {_escape(r.message)} |" for r in decision.rules]
    return "\n".join(lines) + "\n"
