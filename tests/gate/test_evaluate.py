"""The pure decision: each rule family on hand-built evidence."""

from __future__ import annotations

import datetime
from typing import Any

from ci_ml.gate.evaluate import evaluate
from ci_ml.gate.interface import Evidence, Outcome, StageModel, StagePolicy
from ci_ml.scan.interface import Finding, Location, ScanResult, ScanStatus, Severity
from ci_ml.scan.waivers import Scope, Suppressed, Waiver, apply_waivers

TODAY = datetime.date(2025, 6, 1)
DIGEST = "sha256:" + "a" * 64


def finding(scanner: str, severity: Severity, fid: str = "R1", path: str = "src/a.py",
            package: str | None = None) -> Finding:
    return Finding(fid, fid, scanner, severity, "t",
                   Location(path=None if package else path, package=package))


def scans(*findings: Finding) -> dict[str, ScanResult]:
    out: dict[str, list[Finding]] = {}
    for f in findings:
        out.setdefault(f.scanner, []).append(f)
    return {s: ScanResult(s, ScanStatus.OK, tuple(fs), "tool", "1") for s, fs in out.items()}


def evidence(**kw: Any) -> Evidence:
    base: dict[str, Any] = {"metrics": {"accuracy": 0.95, "loss": 0.2},
                            "data_report": {"checks": [{"name": "x", "passed": True}]},
                            "scans": {}, "today": TODAY, "model_digest": DIGEST}
    base.update(kw)
    return Evidence(**base)


def policy(stage: str = "staging", **section: Any) -> StagePolicy:
    return StagePolicy.from_config(stage, {"required_scans": [], **section})


def outcome(decision: Any, name: str) -> Outcome:
    return next(r.outcome for r in decision.rules if r.rule == name)


def test_a_budget_covers_worse_severities_without_their_own_budget() -> None:
    ev = evidence(scans=scans(finding("code", Severity.HIGH)))
    d = evaluate(ev, policy(findings={"medium": 0}))
    assert d.blocking[0].rule == "findings.medium"
    assert d.blocking[0].observed["severities"] == ["critical", "high", "medium"]
    # A separate high budget takes highs out of the medium band.
    d = evaluate(ev, policy(findings={"high": 1, "medium": 0}))
    assert d.passed


def test_severities_below_the_lowest_budget_are_unlimited() -> None:
    ev = evidence(scans=scans(*[finding("code", Severity.LOW, f"R{i}") for i in range(50)]))
    assert evaluate(ev, policy(findings={"medium": 0})).passed


def test_per_scanner_budget() -> None:
    ev = evidence(scans=scans(finding("deps", Severity.MEDIUM, package="requests"),
                              finding("code", Severity.MEDIUM)))
    d = evaluate(ev, policy(findings={"medium": 5}, scanners={"deps": {"medium": 0}}))
    assert [r.rule for r in d.blocking] == ["findings.deps.medium"]
    assert "from deps" in d.blocking[0].message


def test_regression_absolute_relative_and_direction() -> None:
    base = {"staging": StageModel("staging", 3, "sha256:" + "b" * 64,
                                  {"accuracy": 0.97, "loss": 0.10})}
    ev = evidence(stage_models=base)
    pol = policy(regression={"accuracy": {"tolerance": 0.01},
                             "loss": {"direction": "lower", "tolerance": 0.5, "relative": True}})
    d = evaluate(ev, pol)
    assert outcome(d, "regression.accuracy") is Outcome.BLOCK   # 0.02 worse > 0.01
    assert outcome(d, "regression.loss") is Outcome.BLOCK       # 100% worse > 50%
    d = evaluate(evidence(stage_models=base, metrics={"accuracy": 0.965, "loss": 0.14}), pol)
    assert d.passed
    # Better is never a regression, whatever the size of the change.
    d = evaluate(evidence(stage_models=base, metrics={"accuracy": 0.99, "loss": 0.01}), pol)
    assert d.passed


def test_regression_with_empty_stage_passes_and_says_why() -> None:
    d = evaluate(evidence(), policy(regression={"accuracy": {}}))
    assert d.passed and "no model in staging yet" in d.rules[0].message


def test_regression_blocks_when_candidate_lacks_the_metric() -> None:
    d = evaluate(evidence(metrics={}), policy(regression={"f1": {}}))
    assert d.blocking[0].rule == "regression.f1"


def test_limits_from_prune_report() -> None:
    report = {"served": {"latency_ms": {"b1": 2.0, "b256": 40.0}, "onnx_bytes": 1000,
                         "accuracy_drop": 0.4}}
    pol = policy(limits={"latency_ms_b1": 3.0, "latency_ms_b256": 30.0, "onnx_bytes": None,
                         "accuracy_drop": 0.5})
    d = evaluate(evidence(prune_report=report), pol)
    assert [r.rule for r in d.blocking] == ["limit.latency_ms_b256"]
    d = evaluate(evidence(prune_report=None), pol)
    assert {r.rule for r in d.blocking} == {"limit.latency_ms_b1", "limit.latency_ms_b256",
                                            "limit.accuracy_drop"}
    assert all("missing evidence" in r.message for r in d.blocking)


def test_production_requires_the_digest_to_have_passed_staging() -> None:
    pol = policy("production")
    assert evaluate(evidence(), pol).blocking[0].rule == "stage.staging"
    assert evaluate(evidence(passed={"staging": frozenset({DIGEST})}), pol).passed
    assert evaluate(evidence(passed={"staging": frozenset({DIGEST})}, model_digest=None),
                    pol).blocking[0].rule == "stage.staging"
    assert evaluate(evidence(), policy("production", require_previous_stage=False)).passed
    assert not any(r.rule.startswith("stage.") for r in evaluate(evidence(), policy()).rules)


def test_a_failed_scan_blocks_even_when_not_required() -> None:
    broken = {"deps": ScanResult.failed("deps", "pip-audit", "no network")}
    d = evaluate(evidence(scans=broken), policy())
    assert d.blocking[0].rule == "scan.deps" and "no network" in d.blocking[0].message


def test_waivers_suppress_expire_and_renew() -> None:
    f = finding("code", Severity.HIGH, "B602", "src/x.py")
    old = Waiver("B602", Scope("path", "src/*.py"), "me", "r", datetime.date(2025, 5, 1))
    new = Waiver("B602", Scope("path", "src/x.py"), "me", "r", datetime.date(2025, 6, 10))
    pol = policy(findings={"high": 0})
    d = evaluate(evidence(scans=scans(f), waivers=(old,)), pol)
    assert {r.rule for r in d.blocking} == {"findings.high", "waivers.expired"}
    # A renewed waiver next to the old entry covers the finding: nothing blocks.
    d = evaluate(evidence(scans=scans(f), waivers=(old, new)), pol)
    assert d.passed
    assert d.waivers is not None and d.waivers.expiring == (new,)
    # The waiver lapses the day after its expiry date.
    later = evidence(scans=scans(f), waivers=(new,), today=datetime.date(2025, 6, 11))
    assert not evaluate(later, pol).passed
    on_the_day = evidence(scans=scans(f), waivers=(new,), today=datetime.date(2025, 6, 10))
    assert evaluate(on_the_day, pol).passed


def test_waiver_scope_package_and_aliases() -> None:
    f = Finding("PYSEC-1", "PYSEC-1", "deps", Severity.HIGH, "t",
                Location(package="requests", version="2.0"), aliases=("CVE-2024-1",))
    other = Waiver("CVE-2024-1", Scope("package", "urllib3"), "me", "r", datetime.date(2099, 1, 1))
    right = Waiver("CVE-2024-1", Scope("package", "requests"), "me", "r", datetime.date(2099, 1, 1))
    report = apply_waivers([f], [other, right], TODAY)
    assert report.suppressed == (Suppressed(f, right),) and report.stale == (other,)


def test_decision_json_lists_every_rule_with_numbers() -> None:
    d = evaluate(evidence(scans=scans(finding("code", Severity.HIGH))),
                 policy(metrics={"accuracy": {"min": 0.9}}, findings={"high": 0}))
    doc = d.to_json()
    assert doc["decision"] == "block" and doc["blocking"] == ["findings.high"]
    assert doc["model"]["digest"] == DIGEST and doc["evaluated_on"] == "2025-06-01"
    acc = next(r for r in doc["rules"] if r["rule"] == "metric.accuracy")
    assert acc["observed"] == 0.95 and acc["expected"] == {"min": 0.9}


def test_policy_digest_changes_with_the_policy() -> None:
    assert policy(findings={"high": 0}).digest != policy(findings={"high": 1}).digest


def _gap(package: str) -> Finding:
    return Finding("CIML-D001", "dependency-not-audited", "deps", Severity.UNKNOWN,
                   f"{package} was not audited: service unreachable",
                   Location(path="requirements.txt", line=1, package=package))


def test_an_incomplete_scan_blocks_like_a_failed_one_required_or_not() -> None:
    incomplete = ScanResult("deps", ScanStatus.INCOMPLETE, (), "pip-audit", "2",
                            gaps=(_gap("requests"),))
    for required in (["deps"], []):
        d = evaluate(evidence(scans={"deps": incomplete}),
                     policy(required_scans=required, findings={"critical": 0, "high": 0}))
        assert outcome(d, "scan.deps") is Outcome.BLOCK
        assert "incomplete" in d.blocking[0].message and "requests" in d.blocking[0].message


def test_a_waiver_can_accept_a_gap_but_only_the_one_it_names() -> None:
    incomplete = ScanResult("deps", ScanStatus.INCOMPLETE, (), "pip-audit", "2",
                            gaps=(_gap("internal-lib"), _gap("requests")))
    one = Waiver("CIML-D001", Scope("package", "internal-lib"), "sec", "private index",
                 datetime.date(2025, 12, 31))
    d = evaluate(evidence(scans={"deps": incomplete}, waivers=(one,)),
                 policy(required_scans=["deps"]))
    assert outcome(d, "scan.deps") is Outcome.BLOCK and "requests" in d.blocking[0].message
    both = (one, Waiver("CIML-D001", Scope("package", "requests"), "sec", "r",
                        datetime.date(2025, 12, 31)))
    d = evaluate(evidence(scans={"deps": incomplete}, waivers=both),
                 policy(required_scans=["deps"]))
    assert outcome(d, "scan.deps") is Outcome.PASS


def test_a_finding_suppressed_only_in_code_still_counts() -> None:
    from dataclasses import replace

    from ci_ml.scan.interface import SourceSuppression

    nosec = replace(finding("code", Severity.HIGH, "B602"),
                    suppressed_in_source=SourceSuppression("# nosec", "src/a.py", 3))
    d = evaluate(evidence(scans=scans(nosec)), policy(findings={"high": 0}))
    assert not d.passed
    assert "suppressed only in code" in d.blocking[0].message
    assert d.to_json()["waivers"]["suppressed_in_source"][0]["origin"] == "# nosec"
    waiver = Waiver("B602", Scope("path", "src/a.py"), "sec", "reviewed",
                    datetime.date(2025, 12, 31))
    d = evaluate(evidence(scans=scans(nosec), waivers=(waiver,)), policy(findings={"high": 0}))
    assert d.passed
    assert d.to_json()["waivers"]["suppressed_in_source"][0]["waived_by"] == "B602"
