"""`ci-ml gate` through the real CLI on a trained copy of the example project."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ci_ml.model.steps import served_metrics_path
from tests.gate.trained import cli, days, edit_config

SHELL_CODE = '''import subprocess


def run(cmd: str) -> int:
    return subprocess.call(cmd, shell=True)
'''


def decision(project: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((project / "out" / "decision.json").read_text())
    return data


def rule(project: Path, name: str) -> dict[str, Any]:
    return next(r for r in decision(project)["rules"] if r["rule"] == name)


def summary(project: Path) -> str:
    return (project / "out" / "summary.md").read_text()


def add_shell_call(project: Path) -> None:
    """Real code with a real bandit HIGH finding (B602: subprocess with shell=True)."""
    (project / "src" / "digits_app" / "shell.py").write_text(SHELL_CODE)


def write_waivers(project: Path, expires: str, *, path: str = "src/digits_app/shell.py") -> None:
    (project / "waivers.yaml").write_text(
        "waivers:\n"
        f"  - id: B602\n    path: {path}\n    owner: sec-team@example.com\n"
        f"    reason: the command is a constant\n    expires: {expires}\n")
    edit_config(project, lambda d: d["scan"].__setitem__("waivers", "waivers.yaml"))


def test_passes_and_writes_every_report(project: Path) -> None:
    result = cli(project, "gate", "--stage", "staging")
    assert result.code == 0, result.output
    assert "decision: PASS for staging" in result.stdout
    out = project / "out"
    for name in ("decision.json", "summary.md", "junit.xml", "report.html", "findings.json"):
        assert (out / name).is_file(), name
    d = decision(project)
    assert d["decision"] == "pass" and d["blocking"] == []
    assert d["model"]["digest"].startswith("sha256:")
    assert d["policy_sha256"].startswith("sha256:")
    assert {r["rule"] for r in d["rules"]} >= {"metric.accuracy", "data.checks", "scan.code",
                                               "findings.high", "waivers.expired"}
    assert summary(project).startswith("## ci-ml gate: ✅ PASS for staging")
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html
    assert "http://" not in html and "https://" not in html  # no external resources


def test_blocks_on_metric_regression(project: Path) -> None:
    assert cli(project, "gate", "--stage", "staging").code == 0
    promoted = cli(project, "promote", "--stage", "staging")
    assert promoted.code == 0, promoted.output
    baseline = json.loads(served_metrics_path(project / "out").read_text())["accuracy"]

    def worse_model(doc: dict[str, Any]) -> None:
        doc["train"]["epochs"] = 1
        doc["train"]["learning_rate"] = 0.00001  # barely moves from random weights
        doc["prune"]["enabled"] = False  # fine-tuning after pruning would repair it
        doc["policy"]["staging"]["metrics"] = {"accuracy": {"min": 0.0}}
        doc["policy"]["staging"]["regression"] = {"accuracy": {"tolerance": 0.01},
                                                  "loss": {"direction": "lower",
                                                           "tolerance": 0.1, "relative": True}}
    edit_config(project, worse_model)
    result = cli(project, "gate", "--stage", "staging")
    assert result.code == 1, result.output
    assert "regression.accuracy" in decision(project)["blocking"]
    r = rule(project, "regression.accuracy")
    assert r["observed"]["baseline"] == baseline
    assert r["observed"]["candidate"] < baseline - 0.01
    assert r["observed"]["baseline_version"] == 1
    assert "regression.loss" in decision(project)["blocking"]  # lower is better, relative
    text = summary(project)
    assert text.startswith("## ci-ml gate: ⛔ BLOCKED for staging")
    assert "`regression.accuracy`" in text.split("### Metrics")[0]  # blocking list, up top


def test_blocks_on_high_finding(project: Path) -> None:
    add_shell_call(project)
    result = cli(project, "gate", "--stage", "staging")
    assert result.code == 1, result.output
    assert decision(project)["blocking"] == ["findings.high"]
    assert rule(project, "findings.high")["observed"]["count"] == 1
    assert "| code | ok | 0 | 1 |" in summary(project)


def test_passes_with_active_waiver(project: Path) -> None:
    add_shell_call(project)
    write_waivers(project, "2099-12-31")
    result = cli(project, "gate", "--stage", "staging")
    assert result.code == 0, result.output
    d = decision(project)
    assert d["waivers"]["suppressed_findings"] == 1
    assert d["waivers"]["applied"][0]["id"] == "B602"
    assert "1 more waived" in rule(project, "findings.high")["message"]
    findings = json.loads((project / "out" / "findings.json").read_text())
    waived = [f for f in findings["findings"] if f.get("waived_by") == "B602"]
    assert len(waived) == 1 and findings["counts_after_waivers"]["high"] == 0


def test_waiver_scope_must_match(project: Path) -> None:
    add_shell_call(project)
    write_waivers(project, "2099-12-31", path="src/other/*.py")
    assert cli(project, "gate", "--stage", "staging").code == 1
    assert decision(project)["waivers"]["stale"][0]["id"] == "B602"


def test_blocks_on_expired_waiver(project: Path) -> None:
    add_shell_call(project)
    write_waivers(project, "2020-01-31")
    result = cli(project, "gate", "--stage", "staging")
    assert result.code == 1, result.output
    d = decision(project)
    assert set(d["blocking"]) == {"findings.high", "waivers.expired"}
    assert "2020-01-31" in rule(project, "waivers.expired")["message"]
    text = summary(project)
    assert "Expired (the findings they covered count again):" in text


def test_expired_waiver_only_warns_when_policy_says_so(project: Path) -> None:
    add_shell_call(project)
    write_waivers(project, "2020-01-31")
    edit_config(project, lambda d: d["policy"]["staging"].update(
        {"expired_waivers": "warn", "findings": {"critical": 0}}))
    assert cli(project, "gate", "--stage", "staging").code == 0
    assert rule(project, "waivers.expired")["outcome"] == "pass"


def test_summary_lists_waivers_expiring_within_14_days(project: Path) -> None:
    add_shell_call(project)
    write_waivers(project, days(5))
    assert cli(project, "gate", "--stage", "staging").code == 0
    text = summary(project)
    section = text.split("Expiring within 14 days:")[1]
    assert f"`B602` (path `src/digits_app/shell.py`): expires **{days(5)}**" in section


def test_blocks_on_missing_required_scan(project: Path) -> None:
    # dast is disabled in the example, so it never runs: requiring it must block.
    edit_config(project, lambda d: d["policy"]["staging"].__setitem__(
        "required_scans", ["code", "dast"]))
    result = cli(project, "gate", "--stage", "staging")
    assert result.code == 1, result.output
    assert decision(project)["blocking"] == ["scan.dast"]
    assert rule(project, "scan.dast")["message"] == "required scan 'dast' did not run"


def test_blocks_production_without_staging(project: Path) -> None:
    result = cli(project, "gate", "--stage", "production")
    assert result.code == 1, result.output
    assert decision(project)["blocking"] == ["stage.staging"]
    assert "has not passed staging" in rule(project, "stage.staging")["message"]
    assert cli(project, "gate", "--stage", "staging").code == 0
    assert cli(project, "promote", "--stage", "staging").code == 0
    result = cli(project, "gate", "--stage", "production")
    assert result.code == 0, result.output
    assert rule(project, "stage.staging")["outcome"] == "pass"


def test_forced_staging_does_not_count_as_passed(project: Path) -> None:
    (project / "out" / "decision.json").unlink()  # no gate ran for this model
    forced = cli(project, "promote", "--stage", "staging", "--force", "--reason", "demo")
    assert forced.code == 0, forced.output
    assert "FORCED past the gate" in forced.stderr
    assert cli(project, "gate", "--stage", "production").code == 1
    assert decision(project)["blocking"] == ["stage.staging"]


def test_limit_without_prune_measurement_blocks(project: Path) -> None:
    edit_config(project, lambda d: d["policy"]["staging"].__setitem__(
        "limits", {"onnx_bytes": 1}))
    assert cli(project, "gate", "--stage", "staging").code == 1
    # Blocks either way: the report lacks the number (missing evidence) or exceeds 1 byte.
    assert decision(project)["blocking"] == ["limit.onnx_bytes"]


def test_bad_waivers_file_is_a_usage_error(project: Path) -> None:
    (project / "waivers.yaml").write_text(
        "waivers:\n  - id: B602\n    owner: x\n    expires: 2099-01-01\n")
    edit_config(project, lambda d: d["scan"].__setitem__("waivers", "waivers.yaml"))
    before = (project / "out" / "decision.json").read_bytes()
    result = cli(project, "gate", "--stage", "staging")
    assert result.code == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [lines[0]] and lines[0].startswith("error: ")
    assert "waivers[0]" in lines[0] and "reason" in lines[0]
    assert (project / "out" / "decision.json").read_bytes() == before


def test_bad_policy_key_names_the_key(project: Path) -> None:
    edit_config(project, lambda d: d["policy"]["staging"].__setitem__(
        "regression", {"accuracy": {"direction": "up"}}))
    result = cli(project, "gate", "--stage", "staging")
    assert result.code == 2
    assert result.stderr.startswith("error: ")
    assert "policy.staging.regression.accuracy.direction" in result.stderr
