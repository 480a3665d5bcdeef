"""report.sarif: valid SARIF 2.1.0 with what GitHub code scanning reads."""

from __future__ import annotations

from ci_ml.report.sarif import render_sarif
from tests.report import samples
from tests.report.schema_check import assert_valid_sarif


def _runs(doc: dict) -> dict[str, dict]:  # type: ignore[type-arg]
    return {r["properties"]["scanner"]: r for r in doc["runs"]}


def test_every_kind_of_finding_validates() -> None:
    doc = render_sarif(samples.all_scans())
    assert_valid_sarif(doc)
    assert doc["version"] == "2.1.0"


def test_one_run_per_scanner_with_distinct_categories() -> None:
    runs = _runs(render_sarif(samples.all_scans()))
    assert set(runs) == {"code", "deps", "image", "iac", "model", "dast"}
    categories = [r["automationDetails"]["id"] for r in runs.values()]
    assert len(set(categories)) == len(categories)
    assert runs["deps"]["automationDetails"]["id"] == "ci-ml/deps/"
    assert runs["code"]["tool"]["driver"]["name"] == "bandit"


def test_rules_carry_security_severity_and_results_fingerprints() -> None:
    runs = _runs(render_sarif(samples.all_scans()))
    for run in runs.values():
        for rule in run["tool"]["driver"]["rules"]:
            score = float(rule["properties"]["security-severity"])
            assert 0.0 <= score <= 10.0
        for result in run["results"]:
            assert len(result["partialFingerprints"]["ciMlFingerprint/v1"]) == 32
            assert run["tool"]["driver"]["rules"][result["ruleIndex"]]["id"] == result["ruleId"]
    rules = {r["id"]: r for run in runs.values() for r in run["tool"]["driver"]["rules"]}
    assert rules["PYSEC-2018-28"]["properties"]["security-severity"] == "7.5"   # its CVSS
    assert rules["CIML-M002"]["properties"]["security-severity"] == "9.5"       # critical
    assert rules["B602"]["properties"]["security-severity"] == "8.0"            # high
    assert rules["X-1"]["properties"]["security-severity"] == "5.0"             # unknown


def test_locations_levels_and_package_details() -> None:
    runs = _runs(render_sarif(samples.all_scans()))
    (dep,) = runs["deps"]["results"]
    physical = dep["locations"][0]["physicalLocation"]
    assert physical["artifactLocation"] == {"uri": "requirements.txt", "uriBaseId": "%SRCROOT%"}
    assert physical["region"] == {"startLine": 2}
    assert dep["properties"]["fixVersion"] == "2.20.0" and dep["level"] == "warning"
    iac = runs["iac"]["results"][0]
    assert iac["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == \
        "deploy/my%20app.yaml"
    config = next(r for r in runs["image"]["results"] if r["ruleId"] == "DS-0002")
    assert config["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "app%3A1"
    dast = runs["dast"]["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"]
    assert dast["uri"] == "http://127.0.0.1:8080/predict?x=1"
    assert {r["level"] for r in runs["model"]["results"]} == {"error"}


def test_waived_findings_are_suppressed_not_dropped() -> None:
    scans = samples.all_scans()
    report = samples.waiver_report(scans)
    doc = render_sarif(scans, {s.finding.fingerprint: s.waiver for s in report.suppressed})
    assert_valid_sarif(doc)
    (dep,) = _runs(doc)["deps"]["results"]
    (suppression,) = dep["suppressions"]
    assert suppression["kind"] == "external" and suppression["status"] == "accepted"
    assert "alice" in suppression["justification"] and "2030-01-01" in suppression["justification"]
    assert all("suppressions" not in r for r in _runs(doc)["code"]["results"])


def test_a_scan_that_did_not_run_is_not_a_clean_run() -> None:
    doc = render_sarif({"code": samples.failed("code", "bandit")})
    assert_valid_sarif(doc)
    (run,) = doc["runs"]
    (invocation,) = run["invocations"]
    assert invocation["executionSuccessful"] is False
    assert "did not run" in invocation["toolExecutionNotifications"][0]["message"]["text"]
    assert run["results"] == []


def test_notes_become_notifications() -> None:
    image = _runs(render_sarif(samples.all_scans()))["image"]
    notes = image["invocations"][0]["toolExecutionNotifications"]
    assert notes == [{"level": "note",
                      "message": {"text": "3 non-PyPI package(s) (3 deb) were not checked"}}]


def test_github_ingestion_rules_pass(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The SARIF multitool's GitHub rules: every rule has help, versions are numeric, every
    location has a region; a scan that did not run still names a versioned driver."""
    import json
    from dataclasses import replace

    from tests.sarif_multitool import problems

    scans = samples.all_scans()
    scans["dast"] = replace(scans["dast"], tool_version="ZAP 2.16.1")
    scans["model"] = replace(scans["model"], tool_version="ci-ml 0.1.0")
    scans["secrets"] = replace(samples.failed("code", "bandit"), scanner="secrets")
    waived = {s.finding.fingerprint: s.waiver for s in samples.waiver_report(scans).suppressed}
    assert waived                                   # a suppression is in the file, too
    doc = render_sarif(scans, waived)
    path = tmp_path / "report.sarif"
    path.write_text(json.dumps(doc))
    assert problems([path]) == []
    runs = _runs(doc)
    assert runs["dast"]["tool"]["driver"]["version"] == "2.16.1"
    assert runs["dast"]["tool"]["driver"]["properties"]["versionText"] == "ZAP 2.16.1"
    dast_rule = runs["dast"]["tool"]["driver"]["rules"][0]
    assert dast_rule["help"]["text"]                            # ZAP's solution is kept
    assert runs["secrets"]["tool"]["driver"]["name"] == "ci-ml"   # bandit never ran


def test_the_multitool_does_catch_a_rule_without_help(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    from tests.sarif_multitool import problems

    doc = render_sarif(samples.all_scans())
    del doc["runs"][0]["tool"]["driver"]["rules"][0]["help"]
    doc["runs"][0]["tool"]["driver"]["version"] = "bandit one"
    path = tmp_path / "broken.json"             # not *.sarif: the session check skips it
    path.write_text(json.dumps(doc))
    found = problems([path])
    assert any("GH2012" in p for p in found) and any("SARIF2005" in p for p in found)
