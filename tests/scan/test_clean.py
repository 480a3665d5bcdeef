"""Acceptance: the clean project has nothing to find, and the gate passes it."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import run_cli
from tests.report.schema_check import assert_reports_valid
from tests.scan.conftest import scan_result


def test_every_scanner_finds_nothing_and_the_gate_passes(clean: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_cli("run", "--config", clean / "ci-ml.yaml", "--out", out)
    assert result.code == 0, result.output
    assert "decision: PASS" in result.stdout
    for scanner in ("code", "deps", "iac", "model"):
        found = scan_result(out, scanner)
        assert found["status"] == "ok", found
        assert found["findings"] == [], (scanner, found["findings"])
    assert "models" in scan_result(out, "model")["targets"]


def test_standalone_scans_write_empty_valid_reports(clean: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    for scanner in ("code", "deps", "iac"):
        result = run_cli("scan", scanner, "--config", clean / "ci-ml.yaml", "--out", out,
                         "--fail-on", "info")
        assert result.code == 0, result.output
    assert assert_reports_valid(out) == ["report.sarif", "gl-sast-report.json",
                                         "gl-dependency-scanning-report.json"]
    sarif = json.loads((out / "report.sarif").read_text())
    assert [r["automationDetails"]["id"] for r in sarif["runs"]] == [
        "ci-ml/code/", "ci-ml/deps/", "ci-ml/iac/"]
    assert all(r["results"] == [] and r["invocations"][0]["executionSuccessful"]
               for r in sarif["runs"])
    findings = json.loads((out / "findings.json").read_text())
    assert findings["findings"] == [] and set(findings["scans"]) == {"code", "deps", "iac"}
