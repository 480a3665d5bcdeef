"""summary.md: the pull-request comment / job summary, readable in ten seconds.

Order: the verdict and what blocks; metric deltas against production; findings by
severity and scanner; waivers expiring soon (or expired); the prune trade-off; then
every rule, folded.
"""

from __future__ import annotations

import datetime
from collections import Counter
from collections.abc import Mapping
from typing import Any

from ci_ml.gate.interface import Decision, Evidence, Outcome, StagePolicy
from ci_ml.report.story import data_story, prune_story, short
from ci_ml.scan.interface import ScanStatus, Severity
from ci_ml.scan.waivers import Waiver

SHOWN_SEVERITIES = (Severity.CRITICAL, Severity.HIGH, Severity.MEDIUM, Severity.LOW,
                    Severity.INFO)
HIDDEN_METRICS = frozenset({"samples"})
MAX_LISTED = 20


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def scalar_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and k not in HIDDEN_METRICS}


def _thresholds(policy: StagePolicy) -> dict[str, str]:
    out: dict[str, list[str]] = {}
    for b in policy.metrics:
        if b.min is not None:
            out.setdefault(b.metric, []).append(f">= {b.min:g}")
        if b.max is not None:
            out.setdefault(b.metric, []).append(f"<= {b.max:g}")
    for r in policy.regression:
        unit = "%" if r.relative else ""
        tol = r.tolerance * 100 if r.relative else r.tolerance
        out.setdefault(r.metric, []).append(f"no worse than {policy.stage} by > {tol:g}{unit}")
    return {k: ", ".join(v) for k, v in out.items()}


def _metrics_section(decision: Decision, evidence: Evidence, policy: StagePolicy) -> list[str]:
    candidate = scalar_metrics(evidence.metrics)
    if not candidate:
        return ["### Metrics", "", "metrics.json is missing: no metrics to show.", ""]
    rules = _thresholds(policy)
    # Deltas against production always; against the gated stage's model too when it differs.
    refs = [m for m in (evidence.stage_models.get("production"), decision.baseline) if m]
    refs = [m for i, m in enumerate(refs) if m.digest not in {r.digest for r in refs[:i]}]
    if not refs:
        title, note = "### Metrics", ["No model in production or staging yet, so no deltas.", ""]
    else:
        title = "### Metrics vs " + ", ".join(f"{m.stage} (v{m.version})" for m in refs)
        note = [] if "production" in {m.stage for m in refs} else [
            "No model in production yet.", ""]
    head = "| metric | candidate | " + "".join(f"{m.stage} v{m.version} | delta | "
                                               for m in refs) + "policy |"
    lines = [title, "", *note, head, "|---|---:|" + "---:|---:|" * len(refs) + "---|"]
    for k, v in candidate.items():
        cells = ""
        for m in refs:
            ref = scalar_metrics(m.metrics).get(k)
            cells += (f"{ref:.4f} | {v - ref:+.4f} | " if ref is not None else "- | new | ")
        lines.append(f"| {k} | {v:.4f} | {cells}{rules.get(k, '')} |")
    prod = evidence.stage_models.get("production")
    if prod and decision.model_digest == prod.digest:
        lines += ["", "_The candidate is the model already in production._"]
    return [*lines, ""]


def _findings_section(decision: Decision, evidence: Evidence) -> list[str]:
    kept: dict[str, Counter[Severity]] = {}
    waived: Counter[str] = Counter()
    if decision.waivers is not None:
        for f in decision.waivers.kept:
            kept.setdefault(f.scanner, Counter())[f.severity] += 1
        waived.update(s.finding.scanner for s in decision.waivers.suppressed)
    shown = list(SHOWN_SEVERITIES)
    if any(c[Severity.UNKNOWN] for c in kept.values()):
        shown.append(Severity.UNKNOWN)
    if not evidence.scans:
        return ["### Findings", "", "No scan ran.", ""]
    lines = ["### Findings (after waivers)", "",
             "| scanner | status | " + " | ".join(s.label for s in shown) + " | waived |",
             "|---|---|" + "---:|" * (len(shown) + 1)]
    total: Counter[Severity] = Counter()
    for name, result in sorted(evidence.scans.items()):
        per = kept.get(name, Counter())
        total.update(per)
        status = ("ok" if result.status is ScanStatus.OK else
                  f"**incomplete**: {len(result.gaps)} not covered"
                  if result.status is ScanStatus.INCOMPLETE
                  else f"**did not run**: {_escape(result.error or '')}")
        cells = " | ".join(str(per[s]) for s in shown)
        lines.append(f"| {name} | {status} | {cells} | {waived[name]} |")
    if len(evidence.scans) > 1:
        cells = " | ".join(f"**{total[s]}**" for s in shown)
        lines.append(f"| **total** | | {cells} | **{sum(waived.values())}** |")
    return [*lines, ""]


def _gaps_section(evidence: Evidence) -> list[str]:
    gaps = [(name, g) for name, r in sorted(evidence.scans.items()) for g in r.gaps]
    if not gaps:
        return []
    lines = ["### Not covered (the scan is incomplete)", ""]
    lines += [f"- {name}: {_escape(g.title)}" for name, g in gaps[:MAX_LISTED]]
    if len(gaps) > MAX_LISTED:
        lines.append(f"- ... and {len(gaps) - MAX_LISTED} more in findings.json")
    return [*lines, ""]


def _in_source_section(decision: Decision, evidence: Evidence) -> list[str]:
    """Findings the change under review tried to hide in the code itself: they count."""
    marked = [f for r in evidence.scans.values() for f in r.findings
              if f.suppressed_in_source is not None]
    if not marked:
        return []
    report = decision.waivers
    lines = ["### Suppressed in code, not waived", "",
             "`# nosec` comments and bandit configs in the tree under review do not suppress "
             "findings: each one below counts against the budgets unless a waiver in the "
             "waivers file covers it.", "",
             "| severity | id | where | suppression | waiver |", "|---|---|---|---|---|"]
    for f in sorted(marked, key=lambda f: (-f.severity, f.id))[:MAX_LISTED]:
        waiver = report.waiver_for(f) if report else None
        origin = f.suppressed_in_source.describe() if f.suppressed_in_source else ""
        lines.append(f"| {f.severity.label} | {_escape(f.id)} | {_escape(f.location.describe())}"
                     f" | `{_escape(origin)}` | {_escape(waiver.id) if waiver else '**none**'} |")
    if len(marked) > MAX_LISTED:
        lines.append(f"\n... and {len(marked) - MAX_LISTED} more in findings.json")
    return [*lines, ""]


def _waiver_line(w: Waiver, today: datetime.date | None = None) -> str:
    where = f" ({w.scope.kind} `{w.scope.value}`{', any depth' if w.scope.recursive else ''})"
    left = ""
    if today is not None and w.expires >= today:
        n = (w.expires - today).days
        left = " (today)" if n == 0 else f" (in {n} day{'s' if n > 1 else ''})"
    return (f"- `{w.id}`{where}: expires **{w.expires.isoformat()}**{left}, owner {w.owner}: "
            f"{_escape(w.reason)}")


def _waivers_section(decision: Decision) -> list[str]:
    report = decision.waivers
    if report is None or not (report.suppressed or report.expired or report.expiring
                              or report.stale):
        return []
    lines = ["### Waivers", ""]
    if report.uncovered_expired:
        lines.append("Expired (the findings they covered count again):")
        lines += [_waiver_line(w) for w in report.uncovered_expired]
        lines.append("")
    if report.expiring:
        lines.append("Expiring within 14 days:")
        lines += [_waiver_line(w, decision.today) for w in report.expiring]
        lines.append("")
    recursive = list({id(s.waiver): s.waiver for s in report.suppressed
                      if s.waiver.scope.recursive}.values())
    if recursive:
        lines.append("Applied with a recursive path scope (`**` or a directory: files at any "
                     "depth):")
        lines += [_waiver_line(w, decision.today) for w in recursive]
        lines.append("")
    n_waivers = len({id(s.waiver) for s in report.suppressed})
    lines.append(f"{len(report.suppressed)} finding(s) waived by {n_waivers} waiver(s)"
                 + (f"; {len(report.stale)} waiver(s) match nothing and can go"
                    if report.stale else "") + ".")
    return [*lines, ""]


def _run_section(evidence: Evidence) -> list[str]:
    """One line per step before the gate, worded as report.html words them."""
    data, prune = data_story(evidence.data_report), prune_story(evidence.prune_report)
    lines = [f"- {data.sentence}." if data else "- No data check ran.",
             f"- {prune.sentence}." if prune else "- No prune step ran."]
    return ["### The run", "", *lines, ""]


def _prune_section(evidence: Evidence) -> list[str]:
    story = prune_story(evidence.prune_report)
    if story is None or not story.rows:
        return []
    rows = [f"| {r.label} | {r.base} | {r.candidate} | {r.gain} |" for r in story.rows]
    return ["### Pruning: base against the pruned model", "",
            "| | base (unpruned) | pruned | gain |", "|---|---:|---:|---:|", *rows, ""]


def render_summary(decision: Decision, evidence: Evidence, policy: StagePolicy) -> str:
    passed = decision.outcome is Outcome.PASS
    verdict = "✅ PASS" if passed else "⛔ BLOCKED"
    lines = [f"## ci-ml gate: {verdict} for {decision.stage}", ""]
    facts = [f"candidate `{short(decision.model_digest)}`"]
    if decision.baseline:
        facts.append(f"{decision.stage} now holds v{decision.baseline.version} "
                     f"`{short(decision.baseline.digest)}`")
    else:
        facts.append(f"{decision.stage} is empty")
    facts.append(f"{len(decision.rules)} rules, {len(decision.blocking)} blocking")
    lines += [" · ".join(facts), ""]
    if evidence.registry_signing == "off":
        lines += ["> ⚠️ **Registry signing is OFF** (`registry.signing: off`): promotions are "
                  "unsigned and their record can be rewritten without a trace.", ""]
    if decision.blocking:
        lines.append(f"**Blocking ({len(decision.blocking)}):**")
        lines += [f"- `{r.rule}`: {_escape(r.message)}" for r in decision.blocking]
        lines.append("")
    lines += _run_section(evidence)
    lines += _metrics_section(decision, evidence, policy)
    lines += _findings_section(decision, evidence)
    lines += _gaps_section(evidence)
    lines += _in_source_section(decision, evidence)
    lines += _waivers_section(decision)
    lines += _prune_section(evidence)
    lines += [f"<details><summary>All {len(decision.rules)} rules (policy "
              f"<code>{short(decision.policy_digest)}</code>)</summary>", "",
              "| rule | outcome | detail |", "|---|---|---|"]
    lines += [f"| `{r.rule}` | {'pass' if r.outcome is Outcome.PASS else '**block**'} | "
              f"{_escape(r.message)} |" for r in decision.rules]
    lines += ["", "</details>"]
    return "\n".join(lines) + "\n"
