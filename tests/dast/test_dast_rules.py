"""ZAP's rules file: parsing, levels, scope, and what each level does to a finding."""

from __future__ import annotations

from pathlib import Path

import pytest

from ci_ml.dast.findings import findings_from
from ci_ml.dast.interface import Alert, AlertConfidence, DastReport, Risk
from ci_ml.dast.rules import Action, Rules
from ci_ml.errors import InputError
from ci_ml.scan.interface import Severity

RULES = (
    "# ZAP scan rule configuration file\n"
    "10021\tIGNORE\t(X-Content-Type-Options Header Missing)\n"
    "10036\tFAIL\t(Server Leaks Version Information)\tfix the banner\n"
    "10038-1\tINFO\t(CSP Header Not Set)\n"
    "10098\tWARN\n"
    "10020,10038\tOUTOFSCOPE\t.*/docs/.*\n"
    "*\tOUTOFSCOPE\t.*/static/.*\n"
)


def alert(plugin: str, risk: Risk = Risk.LOW, url: str = "http://t/", ref: str = "",
          confidence: AlertConfidence = AlertConfidence.MEDIUM) -> Alert:
    return Alert(plugin_id=plugin, name=f"rule {plugin}", risk=risk, confidence=confidence,
                 url=url, alert_ref=ref, cwe=693)


def test_levels_and_notes() -> None:
    rules = Rules.parse(RULES)
    assert rules.action(alert("10021")) is Action.IGNORE
    assert rules.action(alert("10036")) is Action.FAIL
    assert rules.notes["10036"] == "fix the banner"
    assert rules.action(alert("10038", ref="10038-1")) is Action.INFO   # alertRef first
    assert rules.action(alert("10038", ref="10038-2")) is Action.WARN
    assert rules.action(alert("90022")) is Action.WARN                  # unlisted


def test_out_of_scope_by_plugin_and_for_all() -> None:
    rules = Rules.parse(RULES)
    assert not rules.in_scope(alert("10020", url="http://t/docs/x"))
    assert rules.in_scope(alert("10020", url="http://t/predict"))
    assert rules.in_scope(alert("10098", url="http://t/docs/x"))
    assert not rules.in_scope(alert("10098", url="http://t/static/a.js"))


def test_actions_set_severity() -> None:
    report = DastReport("builtin", "x", "http://t", alerts=(
        alert("10021"), alert("10036"), alert("10038", Risk.MEDIUM, ref="10038-1"),
        alert("10098", Risk.MEDIUM), alert("10020", Risk.MEDIUM, url="http://t/docs/a"),
        alert("10096", confidence=AlertConfidence.FALSE_POSITIVE)))
    found = {f.id: f for f in findings_from(report, Rules.parse(RULES))}
    assert set(found) == {"10036", "10038", "10098"}
    assert found["10036"].severity is Severity.HIGH and found["10036"].raw["rule_action"] == "FAIL"
    assert found["10038"].severity is Severity.INFO
    assert found["10098"].severity is Severity.MEDIUM
    assert found["10098"].aliases == ("CWE-693",)


@pytest.mark.parametrize("text, message", [
    ("10021\tMAYBE\t\n", "level 'MAYBE'"),
    ("10021 IGNORE\n", "expected '<plugin id><TAB>"),
    ("abc\tIGNORE\t\n", "plugin id must be a number"),
    ("*\tOUTOFSCOPE\t(unclosed\n", "regex does not compile"),
])
def test_malformed_lines_name_file_and_line(text: str, message: str) -> None:
    with pytest.raises(InputError, match=message) as err:
        Rules.parse("# header\n" + text, "rules.tsv")
    assert "rules.tsv:2" in err.value.message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="rules file not found"):
        Rules.load(tmp_path / "none.tsv")
