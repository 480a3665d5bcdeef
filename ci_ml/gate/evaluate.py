"""``evaluate(evidence, policy) -> Decision``: pure, no I/O, every rule explained.

Rules, in the order a reviewer reads them: the stage's prerequisite (production
only for what passed staging), absolute metric thresholds, regression against
the model now in the stage, latency/size limits from the prune report, data
checks, required scans (a failed or incomplete scan blocks, required or not), finding
budgets (overall and per scanner, after waivers; a finding suppressed only in the code
under review, by ``# nosec`` or a tree-local bandit config, still counts), and expired
waivers.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from ci_ml.gate.interface import (
    LIMIT_PATHS,
    Decision,
    Direction,
    Evidence,
    Outcome,
    RuleResult,
    StagePolicy,
)
from ci_ml.scan.interface import Finding, ScanResult, ScanStatus, Severity
from ci_ml.scan.waivers import WaiverReport, apply_waivers

PASS, BLOCK = Outcome.PASS, Outcome.BLOCK


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _short(digest: str | None) -> str:
    return digest.removeprefix("sha256:")[:12] if digest else "none"


def _stage_rules(evidence: Evidence, policy: StagePolicy) -> list[RuleResult]:
    prev = policy.previous_stage
    if prev is None or not policy.require_previous_stage:
        return []
    name = f"stage.{prev}"
    digest = evidence.model_digest
    if digest is None:
        return [RuleResult(name, "stage", BLOCK, f"no model files to check against {prev} "
                           "(missing evidence)", None, f"passed {prev}")]
    if digest in evidence.passed.get(prev, frozenset()):
        return [RuleResult(name, "stage", PASS, f"model {_short(digest)} passed {prev} and "
                           f"was promoted there", digest, f"passed {prev}")]
    return [RuleResult(name, "stage", BLOCK, f"model {_short(digest)} has not passed {prev}: "
                       f"promote it to {prev} through a passing gate first", digest,
                       f"passed {prev}")]


def _metric_rules(evidence: Evidence, policy: StagePolicy) -> list[RuleResult]:
    rules = []
    for bound in policy.metrics:
        value = _number(evidence.metrics.get(bound.metric))
        name = f"metric.{bound.metric}"
        expected = {k: v for k, v in (("min", bound.min), ("max", bound.max)) if v is not None}
        if value is None:
            rules.append(RuleResult(name, "metric", BLOCK,
                                    f"{bound.metric} is missing from metrics.json", None, expected))
            continue
        ok = (bound.min is None or value >= bound.min) and (bound.max is None or value <= bound.max)
        rel = " and ".join(f"{'>=' if k == 'min' else '<='} {v}" for k, v in expected.items())
        rules.append(RuleResult(name, "metric", PASS if ok else BLOCK,
                                f"{bound.metric} = {value:.4f} (needs {rel})", value, expected))
    return rules


def _regression_rules(evidence: Evidence, policy: StagePolicy) -> list[RuleResult]:
    base = evidence.stage_models.get(policy.stage)
    rules = []
    for bound in policy.regression:
        name = f"regression.{bound.metric}"
        expected = {"direction": bound.direction.value, "tolerance": bound.tolerance,
                    "relative": bound.relative}
        value = _number(evidence.metrics.get(bound.metric))
        if value is None:
            rules.append(RuleResult(name, "regression", BLOCK, f"{bound.metric} is missing from "
                                    "metrics.json", None, expected))
            continue
        if base is None:
            rules.append(RuleResult(name, "regression", PASS, f"no model in {policy.stage} yet: "
                                    f"nothing to regress against ({bound.metric} = {value:.4f})",
                                    {"candidate": value, "baseline": None}, expected))
            continue
        ref = _number(base.metrics.get(bound.metric))
        if ref is None:
            rules.append(RuleResult(name, "regression", PASS, f"{policy.stage} v{base.version} "
                                    f"has no {bound.metric}: nothing to compare",
                                    {"candidate": value, "baseline": None}, expected))
            continue
        delta = value - ref
        worse = -delta if bound.direction is Direction.HIGHER else delta
        if bound.relative:
            worse = worse / abs(ref) if ref else (math.inf if worse > 0 else 0.0)
        ok = worse <= bound.tolerance + 1e-12
        verdict = "within" if ok else "exceeds"
        share = f", {worse:.1%} worse" if bound.relative and worse > 0 else ""
        tol = f"{bound.tolerance:.1%}" if bound.relative else f"{bound.tolerance:g}"
        rules.append(RuleResult(
            name, "regression", PASS if ok else BLOCK,
            f"{bound.metric} {value:.4f} vs {ref:.4f} in {policy.stage} v{base.version} "
            f"({delta:+.4f}{share}; {bound.direction.value} is better): {verdict} tolerance "
            f"{tol}",
            {"candidate": value, "baseline": ref, "delta": round(delta, 6),
             "regression": round(worse, 6) if math.isfinite(worse) else None,
             "baseline_version": base.version}, expected))
    return rules


def _lookup(report: Mapping[str, Any] | None, path: tuple[str, ...]) -> float | None:
    node: Any = report
    for key in path:
        if not isinstance(node, Mapping):
            return None
        node = node.get(key)
    return _number(node)


def _limit_rules(evidence: Evidence, policy: StagePolicy) -> list[RuleResult]:
    rules = []
    for key, limit in policy.limits.items():
        path = LIMIT_PATHS[key]
        value = _lookup(evidence.prune_report, path)
        name = f"limit.{key}"
        if value is None:
            where = ("prune-report.json is missing" if evidence.prune_report is None
                     else f"prune-report.json has no {'.'.join(path)}")
            rules.append(RuleResult(name, "limit", BLOCK, f"missing evidence: {where} "
                                    f"(limit {key} <= {limit:g})", None, {"max": limit}))
            continue
        ok = value <= limit
        rules.append(RuleResult(name, "limit", PASS if ok else BLOCK,
                                f"{key} = {value:g} (limit {limit:g})", value, {"max": limit}))
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


def _gap_rule(name: str, scanner: str, result: ScanResult, evidence: Evidence) -> RuleResult:
    """An incomplete scan blocks like a failed one, unless a waiver in force accepts every
    gap (e.g. a dependency installed from a URL, which no advisory service can audit)."""
    if not result.gaps:   # incomplete without saying what is missing: never clean
        return RuleResult(name, "scan", BLOCK, f"scan '{scanner}' is incomplete",
                          "incomplete", "ok")
    gaps = apply_waivers(result.gaps, evidence.waivers, evidence.today)
    if not gaps.kept:
        waived = ", ".join(f"{s.finding.location.describe()} (waiver {s.waiver.id})"
                           for s in gaps.suppressed)
        return RuleResult(name, "scan", PASS, f"scan '{scanner}' ran ({result.tool} "
                          f"{result.tool_version}); not covered but waived: {waived}",
                          "incomplete", "ok")
    shown = "; ".join(g.title for g in gaps.kept[:3])
    more = f" (+{len(gaps.kept) - 3} more)" if len(gaps.kept) > 3 else ""
    return RuleResult(name, "scan", BLOCK, f"scan '{scanner}' is incomplete: {shown}{more}",
                      "incomplete", "ok")


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
        elif result.status is ScanStatus.INCOMPLETE:
            rules.append(_gap_rule(name, scanner, result, evidence))
        else:
            rules.append(RuleResult(name, "scan", PASS, f"scan '{scanner}' ran "
                                    f"({result.tool} {result.tool_version})", "ok", "ok"))
    for scanner, result in sorted(evidence.scans.items()):
        if scanner in policy.required_scans:
            continue
        # Fail closed: a scan that was attempted and broke, or left something unchecked,
        # is never a clean scan, required or not.
        if result.status is ScanStatus.ERROR:
            rules.append(RuleResult(f"scan.{scanner}", "scan", BLOCK,
                                    f"scan '{scanner}' failed: {result.error}", "error", "ok"))
        elif result.status is ScanStatus.INCOMPLETE:
            rules.append(_gap_rule(f"scan.{scanner}", scanner, result, evidence))
    return rules


def _bands(budgets: Mapping[Severity, int]) -> list[tuple[Severity, tuple[Severity, ...]]]:
    """Each budgeted severity with the severities it covers: itself and every worse one
    that has no budget of its own (a high finding never slips past a medium budget)."""
    budgeted = sorted(budgets, reverse=True)
    out = []
    for i, sev in enumerate(budgeted):
        ceiling = budgeted[i - 1] if i else None
        band = tuple(s for s in sorted(Severity, reverse=True)
                     if s >= sev and (ceiling is None or s < ceiling))
        out.append((sev, band))
    return out


def _budget_rules(prefix: str, scope: str, budgets: Mapping[Severity, int],
                  kept: Counter[Severity], waived: Counter[Severity],
                  in_code: Counter[Severity]) -> list[RuleResult]:
    rules = []
    for sev, band in _bands(budgets):
        budget = budgets[sev]
        n = sum(kept[s] for s in band)
        w = sum(waived[s] for s in band)
        c = sum(in_code[s] for s in band)
        label = " or ".join(s.label for s in band)
        ok = n <= budget
        note = f", {w} more waived" if w else ""
        # A '# nosec' or a tree-local bandit config is not a waiver: those findings count.
        note += (f"; {c} of them suppressed only in code (# nosec or a tree-local bandit "
                 "config), which is not a waiver") if c else ""
        observed = {"count": n, "waived": w, "severities": [s.label for s in band]}
        if c:
            observed["suppressed_in_source"] = c
        rules.append(RuleResult(f"{prefix}.{sev.label}", "findings", PASS if ok else BLOCK,
                                f"{n} {label} finding(s){scope} (budget {budget}{note})",
                                observed, budget))
    return rules


def _count(findings: Iterable[Finding]) -> dict[str, Counter[Severity]]:
    per: dict[str, Counter[Severity]] = {}
    for f in findings:
        c = per.get(f.scanner)
        if c is None:
            c = per[f.scanner] = Counter()
        c[f.severity] += 1
    return per


def _finding_rules(report: WaiverReport, policy: StagePolicy) -> list[RuleResult]:
    kept = _count(report.kept)
    waived = _count(s.finding for s in report.suppressed)
    in_code = _count(f for f in report.kept if f.suppressed_in_source is not None)
    total_kept: Counter[Severity] = sum(kept.values(), Counter())
    total_waived: Counter[Severity] = sum(waived.values(), Counter())
    total_in_code: Counter[Severity] = sum(in_code.values(), Counter())
    rules = _budget_rules("findings", "", policy.findings, total_kept, total_waived,
                          total_in_code)
    for scanner, budgets in policy.scanner_budgets.items():
        rules += _budget_rules(f"findings.{scanner}", f" from {scanner}", budgets,
                               kept.get(scanner, Counter()), waived.get(scanner, Counter()),
                               in_code.get(scanner, Counter()))
    return rules


def _waiver_rules(report: WaiverReport, policy: StagePolicy) -> list[RuleResult]:
    expired = report.uncovered_expired
    if not expired:
        return [RuleResult("waivers.expired", "waivers", PASS,
                           "no expired waiver left a finding uncovered", [], [])]
    ids = [w.id for w in expired]
    listing = ", ".join(f"{w.id} (owner {w.owner}, expired {w.expires.isoformat()})"
                        for w in expired)
    outcome = BLOCK if policy.expired_waivers_block else PASS
    tail = "" if policy.expired_waivers_block else " (policy: warn only)"
    return [RuleResult("waivers.expired", "waivers", outcome,
                       f"expired waiver(s) no longer cover their findings: {listing}; renew "
                       f"or fix{tail}", ids, [])]


def _registry_rules(evidence: Evidence) -> list[RuleResult]:
    """The registry the stage rules read must verify; an opted-out signature is shown."""
    if evidence.registry_problem:
        return [RuleResult("registry.history", "registry", BLOCK, evidence.registry_problem,
                           "fails verification", "a verified history")]
    if evidence.registry_signing == "off":
        return [RuleResult("registry.history", "registry", PASS,
                           f"registry signing is OFF (registry.signing: off): promotions are "
                           f"UNSIGNED ({evidence.registry_unsigned} unsigned event(s)) and "
                           "their record can be rewritten without a trace", "unsigned",
                           "signed")]
    return [RuleResult("registry.history", "registry", PASS,
                       "the registry's history verified: every event signed and linked",
                       "verified", "a verified history")]


def evaluate(evidence: Evidence, policy: StagePolicy) -> Decision:
    findings = [f for r in evidence.scans.values() for f in r.findings]
    report = apply_waivers(findings, evidence.waivers, evidence.today)
    rules = (
        _stage_rules(evidence, policy)
        + _metric_rules(evidence, policy)
        + _regression_rules(evidence, policy)
        + _limit_rules(evidence, policy)
        + _data_rules(evidence, policy)
        + _scan_rules(evidence, policy)
        + _finding_rules(report, policy)
        + _waiver_rules(report, policy)
        + _registry_rules(evidence)
    )
    return Decision(policy.stage, tuple(rules), model_digest=evidence.model_digest,
                    policy_digest=policy.digest,
                    baseline=evidence.stage_models.get(policy.stage), waivers=report,
                    today=evidence.today)
