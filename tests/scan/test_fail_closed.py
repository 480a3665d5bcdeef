"""Fail closed: a tool that is missing, crashes, times out or prints garbage is exit 3 and a
"did not run" result the gate blocks on, never an empty, clean-looking report."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from ci_ml.gate.evaluate import evaluate
from ci_ml.gate.interface import Evidence, Outcome, StagePolicy
from ci_ml.scan.interface import ScanResult
from tests.conftest import run_cli
from tests.report.schema_check import assert_reports_valid
from tests.scan.conftest import scan_result


def _fake_tool(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / "bin" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(f"#!{sys.executable}\nimport sys, time\n"
                    "if '--version' in sys.argv: print('9.9.9'); sys.exit(0)\n" + body)
    path.chmod(0o755)
    return path


CASES = {
    "missing": None,
    "crash": "sys.stderr.write('Traceback: boom\\n'); sys.exit(2)",
    "garbage": "print('this is not json'); sys.exit(0)",
    "wrong-shape": "print('[1, 2, 3]'); sys.exit(0)",
    "timeout": "time.sleep(30)",
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_broken_bandit(planted: Path, tmp_path: Path, case: str) -> None:
    body = CASES[case]
    tool = _fake_tool(tmp_path, "bandit", body) if body else tmp_path / "no-such-bandit"
    config = planted / "ci-ml.yaml"
    if case == "timeout":
        config.write_text(config.read_text().replace("scan:\n", "scan:\n  timeout_s: 1\n"))
    out = tmp_path / "out"
    result = run_cli("scan", "code", "--config", config, "--out", out,
                     env={"CI_ML_TOOL_BANDIT": str(tool)})
    assert result.code == 3, result.output
    found = scan_result(out, "code")
    assert found["status"] == "error" and found["findings"] == []
    assert "did not run" in found["error"] or "not an executable" in found["error"]
    assert "error: scan-code: did not run" in result.stderr
    assert_reports_valid(out)
    sarif = json.loads((out / "report.sarif").read_text())
    assert sarif["runs"][0]["invocations"][0]["executionSuccessful"] is False
    sast = json.loads((out / "gl-sast-report.json").read_text())
    assert sast["scan"]["status"] == "failure"
    assert "**did not run**" in (out / "summary.md").read_text()
    assert "<error" in (out / "junit.xml").read_text()
    # The gate weighs this result: a required scan that did not run blocks.
    decision = evaluate(Evidence({}, None, {"code": ScanResult.from_json(found)}),
                        StagePolicy("staging", required_scans=("code",),
                                    data_check_required=False))
    assert decision.outcome is Outcome.BLOCK
    assert [r.rule for r in decision.blocking] == ["scan.code"]


def test_failed_scan_is_not_cached(planted: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {"CI_ML_TOOL_BANDIT": str(_fake_tool(tmp_path, "bandit", CASES["garbage"]))}
    for _ in range(2):
        result = run_cli("scan", "code", "--config", planted / "ci-ml.yaml", "--out", out,
                         env=env)
        assert result.code == 3
        assert "0 from cache" in result.stdout
    fixed = run_cli("scan", "code", "--config", planted / "ci-ml.yaml", "--out", out)
    assert fixed.code == 0 and scan_result(out, "code")["status"] == "ok"


@pytest.mark.parametrize(("scanner", "tool"), [("deps", "pip-audit"), ("iac", "trivy")])
def test_other_tools_fail_closed(planted: Path, tmp_path: Path, scanner: str,
                                 tool: str) -> None:
    out = tmp_path / "out"
    fake = _fake_tool(tmp_path, tool, CASES["garbage"])
    result = run_cli("scan", scanner, "--config", planted / "ci-ml.yaml", "--out", out,
                     env={f"CI_ML_TOOL_{tool.upper().replace('-', '_')}": str(fake)})
    assert result.code == 3, result.output
    found = scan_result(out, scanner)
    assert found["status"] == "error" and "not JSON" in found["error"]
    assert_reports_valid(out)


def test_image_that_cannot_be_found_did_not_run(planted: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_cli("scan", "image", "--config", planted / "ci-ml.yaml", "--out", out,
                     "--image", "ci-ml-test/no-such-image:0")
    assert result.code == 3, result.output
    found = scan_result(out, "image")
    assert found["status"] == "error" and "unable to find the specified image" in found["error"]
    assert json.loads((out / "gl-container-scanning-report.json").read_text())["scan"][
        "status"] == "failure"
