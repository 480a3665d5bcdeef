"""`ci-ml scan`: waivers, --fail-on, the cache, and the reports written into --out."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from tests.conftest import run_cli
from tests.report.schema_check import assert_reports_valid
from tests.scan.conftest import scan_result

TODAY = dt.date.today()


def _waiver(wid: str, scope: str, expires: dt.date, owner: str = "sec@example.com") -> str:
    return (f"  - id: {wid}\n    {scope}\n    owner: {owner}\n    reason: accepted in review\n"
            f"    expires: {expires.isoformat()}\n")


def test_waivers_fail_on_and_reports(planted: Path, tmp_path: Path) -> None:
    (planted / "waivers.yaml").write_text("waivers:\n" + "".join([
        _waiver("PYSEC-2018-28", "package: requests", TODAY + dt.timedelta(days=90)),
        _waiver("CVE-2023-32681", "package: requests", TODAY + dt.timedelta(days=90)),  # alias
        _waiver("PYSEC-2019-217", "package: jinja2", TODAY - dt.timedelta(days=1)),     # expired
        _waiver("PYSEC-2020-96", "package: pyyaml", TODAY + dt.timedelta(days=3)),      # soon
        _waiver("B999", "path: src/", TODAY + dt.timedelta(days=90)),                   # stale
    ]))
    out = tmp_path / "out"
    result = run_cli("scan", "deps", "--config", planted / "ci-ml.yaml", "--out", out,
                     "--waivers", planted / "waivers.yaml", "--fail-on", "medium")
    assert result.code == 1, result.output
    assert "3 deps finding(s) at or above medium remain after waivers" in result.stderr
    assert "warning: waiver expired: PYSEC-2019-217 (package jinja2" in result.stderr
    assert "warning: waiver stale (matches nothing): B999" in result.stderr
    assert "warning: waiver expiring soon: PYSEC-2020-96" in result.stderr

    raw = scan_result(out, "deps")                       # the scan result itself is unwaived
    assert len(raw["findings"]) == 6
    findings = json.loads((out / "findings.json").read_text())
    assert sorted(f["id"] for f in findings["findings"] if "waived_by" not in f) == [
        "PYSEC-2019-217", "PYSEC-2021-142", "PYSEC-2021-66"]
    assert findings["counts"]["medium"] == 6 and findings["counts_after_waivers"]["medium"] == 3
    waivers = findings["waivers"]
    assert sorted(s["finding"]["id"] for s in waivers["suppressed"]) == [
        "PYSEC-2018-28", "PYSEC-2020-96", "PYSEC-2023-74"]
    assert [e["waiver"]["id"] for e in waivers["expired"]] == ["PYSEC-2019-217"]
    assert [w["id"] for w in waivers["stale"]] == ["B999"]

    assert_reports_valid(out)
    sarif = json.loads((out / "report.sarif").read_text())
    suppressed = [r["ruleId"] for r in sarif["runs"][0]["results"] if "suppressions" in r]
    assert sorted(suppressed) == ["PYSEC-2018-28", "PYSEC-2020-96", "PYSEC-2023-74"]
    gitlab = json.loads((out / "gl-dependency-scanning-report.json").read_text())
    assert len(gitlab["vulnerabilities"]) == 3
    junit = (out / "junit.xml").read_text()
    assert junit.count("<skipped") == 3 and junit.count("<failure") == 3
    summary = (out / "summary.md").read_text()
    assert "| deps | pip-audit" in summary and "waiver expired" in summary


def test_fail_on_threshold_and_all_waived(planted: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    high = run_cli("scan", "deps", "--config", planted / "ci-ml.yaml", "--out", out,
                   "--fail-on", "high")
    assert high.code == 0, high.output                   # the planted advisories are medium
    (planted / "waivers.yaml").write_text("waivers:\n" + "".join(
        _waiver(pkg_id, f"package: {pkg}", TODAY + dt.timedelta(days=60))
        for pkg, pkg_id in [("requests", "PYSEC-2018-28"), ("requests", "PYSEC-2023-74"),
                            ("pyyaml", "PYSEC-2020-96"), ("pyyaml", "PYSEC-2021-142"),
                            ("jinja2", "PYSEC-2019-217"), ("jinja2", "PYSEC-2021-66")]))
    waived = run_cli("scan", "deps", "--config", planted / "ci-ml.yaml", "--out", out,
                     "--fail-on", "low", "--waivers", planted / "waivers.yaml")
    assert waived.code == 0, waived.output
    assert "1 from cache" in waived.stdout                   # waivers never change the scan itself


def test_unchanged_inputs_come_from_the_cache(planted: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = run_cli("scan", "deps", "--config", planted / "ci-ml.yaml", "--out", out)
    assert first.code == 0 and "0 from cache" in first.stdout
    again = run_cli("scan", "deps", "--config", planted / "ci-ml.yaml", "--out", tmp_path / "o2")
    assert again.code == 0 and "1 from cache" in again.stdout
    assert scan_result(tmp_path / "o2", "deps")["findings"] == scan_result(out, "deps")["findings"]
    (planted / "requirements.txt").write_text("requests==2.19.0\n")
    changed = run_cli("scan", "deps", "--config", planted / "ci-ml.yaml", "--out", out)
    assert changed.code == 0 and "0 from cache" in changed.stdout
    assert len(scan_result(out, "deps")["findings"]) == 2
    forced = run_cli("scan", "deps", "--config", planted / "ci-ml.yaml", "--out", out, "--force")
    assert "0 from cache" in forced.stdout


def test_reports_cover_every_scan_present_in_out(planted: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert run_cli("scan", "code", "--config", planted / "ci-ml.yaml", "--out", out).code == 0
    result = run_cli("scan", "deps", "--config", planted / "ci-ml.yaml", "--out", out)
    assert result.code == 0
    assert "reports: findings.json, report.sarif, gl-sast-report.json, " \
           "gl-dependency-scanning-report.json, junit.xml, summary.md" in result.stdout
    findings = json.loads((out / "findings.json").read_text())
    assert set(findings["scans"]) == {"code", "deps"}
    assert findings["counts"]["high"] == 1 and findings["waivers"] is None


def _keys(out: Path) -> dict[str, str]:
    manifest = json.loads((out / "manifest.json").read_text())
    return {s["name"]: s["key"] for s in manifest["steps"]}


def test_cache_keys_do_not_depend_on_where_the_project_lives(planted: Path,
                                                             tmp_path: Path) -> None:
    import shutil

    moved = tmp_path / "elsewhere" / "deeper"
    moved.mkdir(parents=True)
    shutil.copytree(planted, moved / "planted")
    (moved / "advisories").symlink_to(planted.parent / "advisories")
    keys = []
    for project in (planted, moved / "planted"):
        out = project / "ci-ml-out"                         # --out inside the project
        for scanner in ("deps", "iac"):
            result = run_cli("scan", scanner, "--config", project / "ci-ml.yaml", "--out", out)
            assert result.code == 0, result.output
        keys.append(_keys(out))
        again = run_cli("scan", "iac", "--config", project / "ci-ml.yaml", "--out", out)
        assert "1 from cache" in again.stdout                   # its own reports did not change it
        assert not any("ci-ml-out" in str(f["location"].get("path"))
                       for f in scan_result(out, "iac")["findings"])
    assert keys[0]["scan-deps"] == keys[1]["scan-deps"]
    assert keys[0]["scan-iac"] == keys[1]["scan-iac"]


def test_url_requirements_make_the_scan_incomplete(planted: Path, tmp_path: Path) -> None:
    (planted / "requirements.txt").write_text(
        "requests==2.19.0\nfoo @ https://example.com/foo-1.0-py3-none-any.whl\n")
    out = tmp_path / "out"
    result = run_cli("scan", "deps", "--config", planted / "ci-ml.yaml", "--out", out)
    assert result.code == 1, result.output              # not audited is never clean
    raw = scan_result(out, "deps")
    assert raw["status"] == "incomplete"
    assert "CIML-D001" not in {f["id"] for f in raw["findings"]}
    assert [(g["id"], g["location"]["package"], g["location"]["line"]) for g in raw["gaps"]] \
        == [("CIML-D001", "foo", 2)]
    assert_reports_valid(out)
    # A waiver accepts the one gap it names; the scan then counts as covered.
    (planted / "waivers.yaml").write_text(
        "waivers:\n  - id: CIML-D001\n    package: foo\n    owner: sec@example.com\n"
        f"    reason: internal wheel\n    expires: {(TODAY + dt.timedelta(days=9)).isoformat()}\n")
    result = run_cli("scan", "deps", "--config", planted / "ci-ml.yaml", "--out", out,
                     "--waivers", planted / "waivers.yaml")
    assert result.code == 0, result.output


def test_advisories_option_beats_the_environment_which_beats_the_config(planted: Path,
                                                                        tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    env = {"CI_ML_ADVISORIES": str(tmp_path / "empty")}
    out = tmp_path / "out"
    from_env = run_cli("scan", "deps", "--config", planted / "ci-ml.yaml", "--out", out, env=env)
    assert from_env.code == 2 and "CI_ML_ADVISORIES" in from_env.stderr      # env over config
    mirror = planted.parent / "advisories" / "pypa-vulns"
    from_cli = run_cli("scan", "deps", "--config", planted / "ci-ml.yaml", "--out", out,
                       "--advisories", mirror, env=env)
    assert from_cli.code == 0, from_cli.output
    assert len(scan_result(out, "deps")["findings"]) == 6
