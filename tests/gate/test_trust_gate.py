"""Issue 14's bypasses at the gate, through `ci-ml gate` on a trained copy of the example:
each used to turn a block into a pass; each must now block and say why."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.conftest import FIXTURES
from tests.gate.test_gate_cli import SHELL_CODE, decision, summary, write_waivers
from tests.gate.trained import cli, days, edit_config

NOSEC_CODE = SHELL_CODE.replace("shell=True)", "shell=True)  # nosec")


def test_nosec_on_a_shell_call_blocks_and_the_summary_names_it(project: Path) -> None:
    (project / "src" / "digits_app" / "shell.py").write_text(NOSEC_CODE)
    result = cli(project, "gate", "--stage", "staging")
    assert result.code == 1, result.output
    d = decision(project)
    assert d["blocking"] == ["findings.high"]          # B602 with shell=True is high
    blocking = next(r for r in d["rules"] if r["rule"] == "findings.high")
    assert "suppressed only in code" in blocking["message"]
    assert d["waivers"]["suppressed_in_source"][0]["origin"] == "# nosec"
    text = summary(project)
    assert "### Suppressed in code, not waived" in text
    assert "`# nosec (src/digits_app/shell.py:5)`" in text


def test_a_bandit_config_committed_in_the_tree_does_not_hide_the_finding(
        project: Path) -> None:
    (project / "src" / "digits_app" / "shell.py").write_text(SHELL_CODE)
    (project / "src" / ".bandit").write_text("[bandit]\nskips: B602,B404,B607\n")
    result = cli(project, "gate", "--stage", "staging")
    assert result.code == 1, result.output
    assert "src/.bandit skips B602" in summary(project)


def test_a_waiver_is_what_accepts_it(project: Path) -> None:
    (project / "src" / "digits_app" / "shell.py").write_text(NOSEC_CODE)
    write_waivers(project, days(30))
    (project / "waivers.yaml").write_text((project / "waivers.yaml").read_text() + (
        "  - id: B404\n    path: src/digits_app/shell.py\n    owner: sec-team@example.com\n"
        f"    reason: import only\n    expires: {days(30)}\n"))
    result = cli(project, "gate", "--stage", "staging")
    assert result.code == 0, result.output


def test_star_does_not_cross_directories_and_double_star_is_shown(project: Path) -> None:
    (project / "src" / "digits_app" / "shell.py").write_text(SHELL_CODE)
    write_waivers(project, days(30), path="src/*.py")
    for rule in ("B404",):
        text = (project / "waivers.yaml").read_text()
        (project / "waivers.yaml").write_text(text + text.split("waivers:\n", 1)[1].replace(
            "B602", rule))
    result = cli(project, "gate", "--stage", "staging")
    assert result.code == 1, result.output           # src/*.py never covers src/pkg/x.py
    write_waivers(project, days(30), path="src/**/*.py")
    text = (project / "waivers.yaml").read_text()
    (project / "waivers.yaml").write_text(text + text.split("waivers:\n", 1)[1].replace(
        "B602", "B404"))
    result = cli(project, "gate", "--stage", "staging")
    assert result.code == 0, result.output
    assert "any depth" in summary(project)
    applied = decision(project)["waivers"]["applied"]
    assert {w["recursive"] for w in applied} == {True}


def test_an_unreachable_advisory_service_blocks_instead_of_passing(project: Path,
                                                                   tmp_path: Path) -> None:
    stand_in = tmp_path / "pip-audit"
    stand_in.write_text(
        f"#!{sys.executable}\nimport sys\n"
        "if '--version' in sys.argv: print('pip-audit 2.10.1'); sys.exit(0)\n"
        f"sys.stdout.write(open({str(FIXTURES / 'recorded/pip-audit/unreachable.json')!r}"
        ").read())\n")
    stand_in.chmod(0o755)
    edit_config(project, lambda d: d["scan"]["deps"].pop("advisories"))
    result = cli(project, "gate", "--stage", "staging",
                 env={"CI_ML_TOOL_PIP_AUDIT": str(stand_in)})
    assert result.code == 1, result.output
    d = decision(project)
    assert "scan.deps" in d["blocking"]
    rule = next(r for r in d["rules"] if r["rule"] == "scan.deps")
    assert rule["observed"] == "incomplete" and "not audited" in rule["message"]
    findings = json.loads((project / "out" / "findings.json").read_text())
    assert findings["scans"]["deps"]["status"] == "incomplete"
