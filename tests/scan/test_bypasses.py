"""Issue 14's bypasses of the code and dependency scans, tried through the real CLI: each
used to turn a blocking scan into a clean one; each must now leave a finding (or an
incomplete scan) that names its reason."""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.report.schema_check import assert_reports_valid
from tests.scan.conftest import FIXTURES, scan_result

RECORDED = FIXTURES / "recorded" / "pip-audit"
SHELL_LINE = "    return subprocess.call(cmd, shell=True)"
EXPIRES = (dt.date.today() + dt.timedelta(days=30)).isoformat()


def _shell_module(project: Path, comment: str = "", where: str = "src/clean_app/runner.py"
                  ) -> Path:
    path = project / where
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("import subprocess  # noqa\n\n\ndef run(cmd: str) -> int:\n"
                    f"{SHELL_LINE}{comment}\n")
    return path


def _scan_code(project: Path, out: Path, *extra: str) -> tuple[int, str, dict[str, dict]]:
    result = run_cli("scan", "code", "--config", project / "ci-ml.yaml", "--out", out, *extra)
    found = {f["id"]: f for f in scan_result(out, "code")["findings"]}
    return result.code, result.output, found


def test_nosec_is_reported_and_counted_not_obeyed(clean: Path, tmp_path: Path) -> None:
    _shell_module(clean, "  # nosec B602 - input is trusted")
    out = tmp_path / "out"
    code, output, found = _scan_code(clean, out, "--fail-on", "high")
    assert code == 1, output                          # the finding still counts
    b602 = found["B602"]
    assert b602["severity"] == "high"
    assert b602["suppressed_in_source"] == {"origin": "# nosec B602 - input is trusted",
                                            "path": "src/clean_app/runner.py", "line": 5}
    doc = json.loads((out / "findings.json").read_text())
    assert [s["id"] for s in doc["suppressed_in_source"]] == ["B602"]
    assert doc["counts_after_waivers"]["high"] == 1
    sarif = json.loads((out / "report.sarif").read_text())
    (result,) = [r for run in sarif["runs"] for r in run["results"] if r["ruleId"] == "B602"]
    assert result["suppressions"] == [{
        "kind": "inSource", "status": "rejected",
        "justification": "# nosec B602 - input is trusted (src/clean_app/runner.py:5): ci-ml "
                         "reports in-code suppressions and does not obey them; only a waiver "
                         "can accept this finding",
        "properties": {"origin": "# nosec B602 - input is trusted",
                       "path": "src/clean_app/runner.py", "line": 5}}]
    gitlab = json.loads((out / "gl-sast-report.json").read_text())
    assert any("Suppressed in code by # nosec B602" in v["description"]
               for v in gitlab["vulnerabilities"])
    summary = (out / "summary.md").read_text()
    assert "Suppressed in code, not waived" in summary and "# nosec B602" in summary
    assert_reports_valid(out)


def test_a_waiver_in_the_security_teams_file_accepts_the_finding(clean: Path,
                                                                 tmp_path: Path) -> None:
    _shell_module(clean, "  # nosec")
    (clean / "waivers.yaml").write_text(
        f"waivers:\n  - id: B602\n    path: src/clean_app/runner.py\n    owner: sec@example.com\n"
        f"    reason: reviewed in #42\n    expires: {EXPIRES}\n")
    out = tmp_path / "out"
    code, output, _ = _scan_code(clean, out, "--fail-on", "high",
                                 "--waivers", str(clean / "waivers.yaml"))
    assert code == 0, output
    sarif = json.loads((out / "report.sarif").read_text())
    (result,) = [r for run in sarif["runs"] for r in run["results"] if r["ruleId"] == "B602"]
    assert [(s["kind"], s["status"]) for s in result["suppressions"]] == [
        ("inSource", "accepted"), ("external", "accepted")]


@pytest.mark.parametrize(("name", "text", "origin"), [
    (".bandit", "[bandit]\nskips: B602,B404\n", "src/clean_app/.bandit skips B602"),
    (".bandit", "[bandit]\nexclude: src/clean_app\n", "excludes src/clean_app"),
    ("bandit.yaml", "skips: [B602]\n", "src/clean_app/bandit.yaml skips B602"),
])
def test_a_bandit_config_in_the_tree_hides_nothing(clean: Path, tmp_path: Path, name: str,
                                                   text: str, origin: str) -> None:
    _shell_module(clean)
    (clean / "src" / "clean_app" / name).write_text(text)
    out = tmp_path / "out"
    code, output, found = _scan_code(clean, out, "--fail-on", "high")
    assert code == 1, output
    assert origin in found["B602"]["suppressed_in_source"]["origin"]
    notes = scan_result(out, "code")["notes"]
    assert any("tree-local bandit config ignored" in n and name in n for n in notes)
    assert "tree-local bandit config ignored" in (out / "summary.md").read_text()


def test_pyproject_bandit_table_at_the_root_is_reported(clean: Path, tmp_path: Path) -> None:
    _shell_module(clean)
    (clean / "pyproject.toml").write_text('[tool.bandit]\nskips = ["B602"]\n')
    _, _, found = _scan_code(clean, tmp_path / "out")
    assert found["B602"]["suppressed_in_source"]["origin"] == "pyproject.toml skips B602"


def test_a_file_bandit_cannot_parse_is_a_finding_and_the_rest_stands(clean: Path,
                                                                     tmp_path: Path) -> None:
    _shell_module(clean)
    (clean / "src" / "clean_app" / "broken.py").write_text("def f(:\n    pass\n")
    out = tmp_path / "out"
    code, output, found = _scan_code(clean, out)
    assert code == 0, output                          # not exit 3: the scan ran
    assert "B602" in found                            # the other files were scanned
    unparsable = found["CIML-C001"]
    assert unparsable["location"]["path"] == "src/clean_app/broken.py"
    assert unparsable["severity"] == "medium"         # scan.code.unparsable_severity
    assert "broken.py" in unparsable["title"]
    # Waivable like any finding.
    (clean / "waivers.yaml").write_text(
        f"waivers:\n  - id: CIML-C001\n    path: src/clean_app/broken.py\n    owner: a\n"
        f"    reason: Python 2 tool, never imported\n    expires: {EXPIRES}\n")
    code, output, _ = _scan_code(clean, tmp_path / "out2", "--fail-on", "medium",
                                 "--waivers", str(clean / "waivers.yaml"))
    assert code == 1 and "1 code finding(s) at or above medium" in output   # B602 only


@pytest.fixture
def unreachable_pip_audit(tmp_path: Path) -> Iterator[Path]:
    """A stand-in replaying pip-audit's real output on this machine, whose advisory service
    (pypi.org's JSON API) does not answer: every dependency 'could not be audited'."""
    script = tmp_path / "bin" / "pip-audit"
    script.parent.mkdir()
    script.write_text(f"#!{sys.executable}\nimport sys\n"
                      "if '--version' in sys.argv: print('pip-audit 2.10.1'); sys.exit(0)\n"
                      f"sys.stdout.write(open({str(RECORDED / 'unreachable.json')!r}).read())\n")
    script.chmod(0o755)
    yield script


def test_an_unreachable_advisory_service_makes_the_scan_incomplete(
        clean: Path, tmp_path: Path, unreachable_pip_audit: Path) -> None:
    (clean / "requirements.txt").write_text("requests==2.19.1\n")
    config = clean / "ci-ml.yaml"
    config.write_text(config.read_text().replace("    advisories: ../advisories/pypa-vulns\n", ""))
    out = tmp_path / "out"
    result = run_cli("scan", "deps", "--config", config, "--out", out,
                     env={"CI_ML_TOOL_PIP_AUDIT": str(unreachable_pip_audit)})
    assert result.code == 1, result.output
    assert "scan deps is incomplete" in result.stderr
    raw = scan_result(out, "deps")
    assert raw["status"] == "incomplete" and raw["findings"] == []
    (gap,) = raw["gaps"]
    assert gap["id"] == "CIML-D001" and gap["location"]["package"] == "requests"
    assert any("answered for none of the 1 dependencies" in n for n in raw["notes"])
    gitlab = json.loads((out / "gl-dependency-scanning-report.json").read_text())
    assert gitlab["scan"]["status"] == "failure"
    assert "incomplete" in (out / "summary.md").read_text()
    assert_reports_valid(out)


def test_unpinned_requirements_are_resolved_not_refused(clean: Path, tmp_path: Path) -> None:
    (clean / "requirements.txt").write_text("requests==2.19.1\nidna\n")
    out = tmp_path / "out"
    result = run_cli("scan", "deps", "--config", clean / "ci-ml.yaml", "--out", out)
    assert result.code == 0, result.output            # was exit 2
    raw = scan_result(out, "deps")
    assert raw["status"] == "ok"
    assert any("1 unpinned requirement(s) resolved with pip" in n and "idna" in n
               for n in raw["notes"])
    ids = {(f["location"]["package"], f["id"]) for f in raw["findings"]}
    assert ("requests", "PYSEC-2018-28") in ids
    # urllib3 came in through requests' resolution: audited too, located at the file.
    urllib3 = [f for f in raw["findings"] if f["location"]["package"] == "urllib3"]
    assert urllib3 and urllib3[0]["raw"]["resolved_dependency"] is True


def test_an_unresolvable_unpinned_requirement_is_a_gap_naming_it(clean: Path,
                                                                 tmp_path: Path) -> None:
    (clean / "requirements.txt").write_text("requests==2.19.1\nno-such-package-ci-ml-test>=1\n")
    out = tmp_path / "out"
    result = run_cli("scan", "deps", "--config", clean / "ci-ml.yaml", "--out", out)
    assert result.code == 1, result.output
    raw = scan_result(out, "deps")
    assert raw["status"] == "incomplete"
    (gap,) = raw["gaps"]
    assert gap["id"] == "CIML-D002"
    assert gap["location"] == {"path": "requirements.txt", "line": 2,
                               "package": "no-such-package-ci-ml-test"}
    assert "requirements.txt:2" in gap["title"]
    # The pinned line is still audited.
    assert "PYSEC-2018-28" in {f["id"] for f in raw["findings"]}


def test_a_trivyignore_in_the_tree_hides_nothing(planted: Path, tmp_path: Path) -> None:
    """trivy reads .trivyignore, trivy.yaml and trivy-secret.yaml from where it runs (the
    project): ci-ml disables them, and reports what they asked to hide."""
    (planted / ".trivyignore").write_text("# accepted\naws-access-key-id\nAVD-DS-0002\n")
    (planted / "trivy-secret.yaml").write_text("disable-rules: [aws-access-key-id]\n")
    out = tmp_path / "out"
    result = run_cli("scan", "iac", "--config", planted / "ci-ml.yaml", "--out", out)
    assert result.code == 0, result.output
    raw = scan_result(out, "iac")
    found = {f["id"]: f for f in raw["findings"]}
    assert found["aws-access-key-id"]["suppressed_in_source"]["origin"] == (
        ".trivyignore lists aws-access-key-id")
    assert found["DS-0002"]["suppressed_in_source"]["origin"] == ".trivyignore lists AVD-DS-0002"
    assert any("trivy-secret.yaml" in n for n in raw["notes"])
