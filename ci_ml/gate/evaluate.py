"""``evaluate(evidence, policy) -> Decision``: pure, no I/O, every rule explained."""

from __future__ import annotations

from collections import Counter

from ci_ml.gate.interface import Decision, Evidence, Outcome, RuleResult, StagePolicy
from ci_ml.scan.interface import ScanStatus, Severity

PASS, BLOCK = Outcome.PASS, Outcome.BLOCK


def _metric_rules(evidence: Evidence, policy: StagePolicy) -> list[RuleResult]:
    rules = []
    for bound in policy.metrics:
        value = evidence.metrics.get(bound.metric)
        name = f"metric.{bound.metric}"
        expected = {k: v for k, v in (("min", bound.min), ("max", bound.max)) if v is not None}
        if not isinstance(value, int | float):
            rules.append(RuleResult(name, "metric", BLOCK,
                                    f"{bound.metric} is missing from metrics.json", None, expected))
            continue
        ok = (bound.min is None or value >= bound.min) and (bound.max is None or value <= bound.max)
        rel = " and ".join(f"{'>=' if k == 'min' else '<='} {v}" for k, v in expected.items())
        rules.append(RuleResult(name, "metric", PASS if ok else BLOCK,
                                f"{bound.metric} = {value:.4f} (needs {rel})", value, expected))
    return rules


def _scan_rules(evidence: Evidence, policy: StagePolicy) -> list[RuleResult]:
    rules = []
    for scanner in policy.required_scans:
        result = evidence.scans.get(scanner)
        name = f"scan.{scanner}"
        if result is None:
            rules.append(RuleResult(name, "scan", BLOCK,
                                    f"required scan '{scanner}' did not run", "missing", "ok"))
        elif result.status is ScanStatus.ERROR:
            rules.append(RuleResult(name, "scan", BLOCK,
                                    f"required scan '{scanner}' failed: {result.error}",
                                    "error", "ok"))
        else:
            rules.append(RuleResult(name, "scan", PASS, f"scan '{scanner}' ran "
                                    f"({result.tool} {result.tool_version})", "ok", "ok"))
    for scanner, result in sorted(evidence.scans.items()):
        if scanner not in policy.required_scans and result.status is ScanStatus.ERROR:
            # Fail closed: a scan that was attempted and broke is never a clean scan.
            rules.append(RuleResult(f"scan.{scanner}", "scan", BLOCK,
                                    f"scan '{scanner}' failed: {result.error}", "error", "ok"))
    return rules


def _finding_rules(evidence: Evidence, policy: StagePolicy) -> list[RuleResult]:
    counts: Counter[Severity] = Counter()
    for result in evidence.scans.values():
        counts.update(f.severity for f in result.findings)
    rules = []
    for severity in sorted(policy.findings, reverse=True):
        budget = policy.findings[severity]
        # A budget for a severity covers everything at least that bad not budgeted separately.
        n = counts[severity]
        ok = n <= budget
        rules.append(RuleResult(f"findings.{severity.label}", "findings", PASS if ok else BLOCK,
                                f"{n} {severity.label} finding(s) (budget {budget})", n, budget))
    return rules


def _data_rules(evidence: Evidence, policy: StagePolicy) -> list[RuleResult]:
    report = evidence.data_report
    if report is None:
        outcome = BLOCK if policy.data_check_required else PASS
        return [RuleResult("data.checks", "data", outcome, "data check did not run", None, True)]
    failed = [c["name"] for c in report.get("checks", []) if not c.get("passed")]
    if not failed:
        return [RuleResult("data.checks", "data", PASS,
                           f"all {len(report.get('checks', []))} data checks passed", True, True)]
    outcome = BLOCK if policy.data_check_required else PASS
    return [RuleResult("data.checks", "data", outcome,
                       f"data checks failed: {', '.join(failed)}", failed, True)]


def evaluate(evidence: Evidence, policy: StagePolicy) -> Decision:
    rules = (
        _metric_rules(evidence, policy)
        + _data_rules(evidence, policy)
        + _scan_rules(evidence, policy)
        + _finding_rules(evidence, policy)
    )
    return Decision(policy.stage, tuple(rules))
