"""GitLab security reports: valid against the 15.2.1 schemas, findings routed by kind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ci_ml.report.gitlab import gitlab_reports
from ci_ml.report.security import write_security_reports
from tests.report import samples
from tests.report.schema_check import assert_reports_valid, assert_valid_gitlab

KIND_SCHEMA = {"sast": "sast", "dependency_scanning": "dependency-scanning",
               "container_scanning": "container-scanning", "dast": "dast"}


def _ids(report: dict) -> list[str]:  # type: ignore[type-arg]
    return sorted(v["identifiers"][0]["value"] for v in report["vulnerabilities"])


def test_all_four_reports_validate() -> None:
    reports = gitlab_reports(samples.all_scans())
    assert set(reports) == set(KIND_SCHEMA)
    for kind, report in reports.items():
        assert_valid_gitlab(report, KIND_SCHEMA[kind])
        assert report["version"] == "15.2.1" and report["scan"]["type"] == kind
        assert report["scan"]["status"] == "success"


def test_findings_are_routed_by_kind() -> None:
    reports = gitlab_reports(samples.all_scans())
    assert _ids(reports["sast"]) == ["B602", "CIML-M002", "DS-0002", "KSV-0017", "X-1",
                                     "aws-access-key-id"]
    assert _ids(reports["dependency_scanning"]) == ["PYSEC-2018-28"]
    assert _ids(reports["container_scanning"]) == ["PYSEC-2023-74"]
    assert _ids(reports["dast"]) == ["10020"]


def test_locations_identifiers_and_solutions() -> None:
    reports = gitlab_reports(samples.all_scans())
    (dep,) = reports["dependency_scanning"]["vulnerabilities"]
    assert dep["location"] == {"file": "requirements.txt", "dependency": {
        "package": {"name": "requests"}, "version": "2.19.0", "direct": True}}
    assert dep["solution"] == "Upgrade requests to 2.20.0 or later."
    types = {i["type"]: i["value"] for i in dep["identifiers"]}
    assert types["cve"] == "CVE-2018-18074" and types["ghsa"] == "GHSA-x84v-xcm2-53pg"
    (image,) = reports["container_scanning"]["vulnerabilities"]
    assert image["location"]["image"] == "app:1"
    (dast,) = reports["dast"]["vulnerabilities"]
    assert dast["location"] == {"hostname": "http://127.0.0.1:8080", "method": "POST",
                                "path": "/predict", "param": "x-frame-options"}
    assert reports["dast"]["scan"]["scanned_resources"] == [
        {"method": "GET", "url": "http://127.0.0.1:8080/predict", "type": "url"}]
    bandit = next(v for v in reports["sast"]["vulnerabilities"]
                  if v["identifiers"][0]["value"] == "B602")
    assert {"type": "cwe", "name": "CWE-78", "value": "78",
            "url": "https://cwe.mitre.org/data/definitions/78.html"} in bandit["identifiers"]
    assert bandit["location"] == {"file": "src/app/run.py", "start_line": 12}


def test_ids_are_stable_uuids() -> None:
    first = gitlab_reports(samples.all_scans())
    second = gitlab_reports(samples.all_scans())
    for kind in first:
        assert [v["id"] for v in first[kind]["vulnerabilities"]] == \
               [v["id"] for v in second[kind]["vulnerabilities"]]


def test_waived_findings_are_left_out() -> None:
    scans = samples.all_scans()
    report = samples.waiver_report(scans)
    reports = gitlab_reports(scans, report.suppressed_fingerprints)
    assert reports["dependency_scanning"]["vulnerabilities"] == []
    assert_valid_gitlab(reports["dependency_scanning"], "dependency-scanning")


@pytest.mark.parametrize(("scanner", "tool", "kind"), [
    ("code", "bandit", "sast"), ("deps", "pip-audit", "dependency_scanning"),
    ("image", "trivy", "container_scanning"), ("dast", "zap", "dast")])
def test_failed_scan_is_a_failure_report(scanner: str, tool: str, kind: str) -> None:
    report = gitlab_reports({scanner: samples.failed(scanner, tool)})[kind]
    assert_valid_gitlab(report, KIND_SCHEMA[kind])
    assert report["scan"]["status"] == "failure"
    assert report["scan"]["messages"][0]["level"] == "fatal"
    assert report["vulnerabilities"] == []


def test_write_security_reports_only_for_scanners_present(tmp_path: Path) -> None:
    scans = samples.all_scans()
    only_deps = {"deps": scans["deps"]}
    assert write_security_reports(tmp_path / "a", only_deps, None) == [
        "report.sarif", "gl-dependency-scanning-report.json"]
    written = write_security_reports(tmp_path / "b", scans, samples.waiver_report(scans))
    assert written == ["report.sarif", "gl-sast-report.json",
                       "gl-dependency-scanning-report.json",
                       "gl-container-scanning-report.json", "gl-dast-report.json"]
    assert assert_reports_valid(tmp_path / "b") == written
    assert write_security_reports(tmp_path / "c", {}, None) == []
    assert not (tmp_path / "c").exists()
    sarif = json.loads((tmp_path / "b" / "report.sarif").read_text())
    assert len(sarif["runs"]) == 6
