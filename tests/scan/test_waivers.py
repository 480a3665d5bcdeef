"""Waivers: loading with clear errors, and one set of matching rules for every scanner."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from ci_ml.errors import ConfigError
from ci_ml.scan.interface import Finding, Location, Severity
from ci_ml.scan.waivers import Scope, Waiver, apply_waivers, load_waivers

TODAY = dt.date(2025, 6, 1)


def _finding(fid: str, scanner: str, **loc: str | int) -> Finding:
    return Finding(id=fid, rule="r", scanner=scanner, severity=Severity.HIGH, title=fid,
                   location=Location(**loc),  # type: ignore[arg-type]
                   aliases=("CVE-2018-18074",) if fid == "PYSEC-2018-28" else ())


def _waiver(wid: str, kind: str, value: str, expires: dt.date = dt.date(2025, 12, 31),
            scanner: str | None = None) -> Waiver:
    return Waiver(wid, Scope(kind, value), "alice", "accepted risk", expires, scanner)


DEP = _finding("PYSEC-2018-28", "deps", package="requests", version="2.19.0",
               path="requirements.txt", line=2)
IMG = _finding("PYSEC-2018-28", "image", package="requests", version="2.19.0",
               image="app:1", digest="sha256:" + "ab" * 32)
CODE = Finding(id="B602", rule="subprocess_popen", scanner="code", severity=Severity.HIGH,
               title="B602", location=Location(path="src/app/run.py", line=9))
SECRET = _finding("aws-access-key-id", "iac", path="config/aws.env", line=2)
MODEL = _finding("CIML-M002", "model", path="models/malicious.pkl")


@pytest.mark.parametrize(("waiver", "suppressed"), [
    (_waiver("PYSEC-2018-28", "package", "requests"), {DEP, IMG}),
    (_waiver("CVE-2018-18074", "package", "Requests"), {DEP, IMG}),           # alias, any case
    (_waiver("PYSEC-2018-28", "package", "requests@2.19.0"), {DEP, IMG}),
    (_waiver("PYSEC-2018-28", "package", "requests@2.20.0"), set()),
    (_waiver("PYSEC-2018-28", "package", "requests", scanner="deps"), {DEP}),
    (_waiver("PYSEC-2018-28", "image", "ab" * 32), {IMG}),                   # bare digest
    (_waiver("B602", "path", "src/app/run.py"), {CODE}),
    (_waiver("B602", "path", "src/*/run.py"), {CODE}),
    (_waiver("B602", "path", "./src/"), {CODE}),
    (_waiver("B602", "path", "src/other.py"), set()),
    (_waiver("subprocess_popen", "path", "src/"), {CODE}),                    # by rule name
    (_waiver("aws-access-key-id", "path", "config/aws.env"), {SECRET}),
    (_waiver("CIML-M002", "path", "models/"), {MODEL}),
])
def test_scopes_match_across_scanners(waiver: Waiver, suppressed: set[Finding]) -> None:
    findings = [DEP, IMG, CODE, SECRET, MODEL]
    report = apply_waivers(findings, [waiver], TODAY)
    assert {s.finding for s in report.suppressed} == suppressed
    assert set(report.kept) == set(findings) - suppressed
    assert report.stale == (() if suppressed else (waiver,))


def test_expired_waiver_stops_suppressing_and_is_reported() -> None:
    last_day = _waiver("B602", "path", "src/app/run.py", expires=TODAY)
    report = apply_waivers([CODE], [last_day], TODAY)
    assert report.suppressed == ((CODE, last_day),)                     # valid through its date
    report = apply_waivers([CODE], [last_day], TODAY + dt.timedelta(days=1))
    assert report.kept == (CODE,) and not report.suppressed
    assert [(e.waiver, e.findings) for e in report.expired] == [(last_day, (CODE,))]
    assert report.uncovered_expired == (last_day,)
    assert report.stale == ()
    assert "waiver expired: B602" in report.messages()[0]
    assert "no longer covers 1 finding(s)" in report.messages()[0]


def test_a_renewed_waiver_beside_the_expired_one_keeps_the_finding_accepted() -> None:
    old = _waiver("B602", "path", "src/**/*.py", expires=TODAY - dt.timedelta(days=1))
    new = _waiver("B602", "path", "src/app/run.py", expires=TODAY + dt.timedelta(days=90))
    report = apply_waivers([CODE], [old, new], TODAY)
    assert report.suppressed == ((CODE, new),)
    assert report.uncovered_expired == () and report.stale == ()
    assert "a renewed waiver covers" in report.messages()[0]


def test_stale_and_expiring_waivers() -> None:
    soon = _waiver("B602", "path", "src/app/run.py", expires=TODAY + dt.timedelta(days=14))
    later = _waiver("B602", "path", "src/app/run.py", expires=TODAY + dt.timedelta(days=15),
                    scanner="code")
    unused = _waiver("B999", "path", "src/", expires=TODAY - dt.timedelta(days=30))
    report = apply_waivers([CODE], [soon, later, unused], TODAY)
    assert report.suppressed[0].waiver == soon            # the first valid waiver wins
    assert report.expiring == report.expiring_soon == (soon,)
    assert report.stale == (unused,)                      # matches nothing (and is expired)
    assert report.expired == ()                           # expired ones only if they'd match


WAIVERS_OK = """\
waivers:
  - id: PYSEC-2018-28
    package: requests
    owner: alice@example.com
    reason: never follows redirects to http
    expires: 2025-03-31
  - id: B602
    path: src/app/run.py
    scanner: code
    owner: bob
    reason: fixed command list
    expires: "2026-01-15"
"""


def test_load_waivers(tmp_path: Path) -> None:
    path = tmp_path / "waivers.yaml"
    path.write_text(WAIVERS_OK)
    first, second = load_waivers(path)
    assert (first.id, first.scope, first.owner, first.expires) == (
        "PYSEC-2018-28", Scope("package", "requests"), "alice@example.com", dt.date(2025, 3, 31))
    assert (first.package, first.path, first.image) == ("requests", None, None)
    assert (second.scope, second.scanner, second.expires) == (
        Scope("path", "src/app/run.py"), "code", dt.date(2026, 1, 15))


def test_empty_file_means_no_waivers(tmp_path: Path) -> None:
    (tmp_path / "w.yaml").write_text("# nothing yet\n")
    assert load_waivers(tmp_path / "w.yaml") == ()


BASE = "  - id: X-1\n    package: foo\n    owner: me\n    reason: r\n    expires: 2025-01-01\n"


@pytest.mark.parametrize(("text", "message"), [
    ("waivers: [\n", "YAML syntax error"),
    ("waivers: {id: x}\n", "must be a list"),
    ("waiver:\n" + BASE, "unknown top-level key 'waiver'"),
    ("waivers:\n  - just a string\n", "waivers[0]: must be a mapping"),
    ("waivers:\n" + BASE.replace("    owner: me\n", ""),
     "waivers[0]: missing required key 'owner' (waiver X-1)"),
    ("waivers:\n" + BASE.replace("    reason: r\n", "    reason: ''\n"),
     "missing required key 'reason'"),
    ("waivers:\n" + BASE.replace("2025-01-01", "31/01/2025"), "'expires' must be a date"),
    ("waivers:\n" + BASE.replace("    expires: 2025-01-01\n", ""),
     "missing required key 'expires'"),
    ("waivers:\n" + BASE.replace("    package: foo\n", ""), "exactly one scope"),
    ("waivers:\n" + BASE.replace("    package: foo\n", "    package: foo\n    path: a\n"),
     "got package and path"),
    ("waivers:\n" + BASE.replace("- id: X-1", "- id: ''"), "missing required key 'id'"),
    ("waivers:\n" + BASE + "    expire: 2025-01-01\n", "unknown key 'expire'"),
    ("waivers:\n" + BASE.replace("    owner", "    scanner: sast\n    owner"), "'scanner' must"),
    ("waivers:\n" + BASE + BASE, "waivers[1]: duplicates waivers[0] (waiver X-1)"),
])
def test_malformed_waivers_name_file_and_entry(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "waivers.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_waivers(path)
    assert message in str(info.value)
    assert str(info.value).startswith(str(path))


def test_missing_waivers_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="waivers file not found"):
        load_waivers(tmp_path / "nope.yaml")


@pytest.mark.parametrize(("pattern", "path", "matches"), [
    ("src/*.py", "src/a.py", True),
    ("src/*.py", "src/pkg/deep.py", False),        # '*' never crosses '/'
    ("src/*/*.py", "src/pkg/deep.py", True),
    ("src/**/*.py", "src/a.py", True),              # '**' is zero or more directories
    ("src/**/*.py", "src/pkg/sub/deep.py", True),
    ("src/**", "src/pkg/deep.py", True),
    ("**/deep.py", "src/pkg/deep.py", True),
    ("src/p?g/*.py", "src/pkg/deep.py", True),
    ("src/[pq]kg/*.py", "src/pkg/deep.py", True),
    ("src/pkg/", "src/pkg/sub/deep.py", True),       # a directory: any depth
    ("src/*", "src/pkg/deep.py", False),
    ("*.py", "src/a.py", False),
    ("src/a*", "src/a/b.py", False),
])
def test_path_globs_match_by_segment(pattern: str, path: str, matches: bool) -> None:
    finding = Finding(id="B602", rule="r", scanner="code", severity=Severity.HIGH, title="t",
                      location=Location(path=path, line=1))
    report = apply_waivers([finding], [_waiver("B602", "path", pattern)], TODAY)
    assert bool(report.suppressed) is matches


def test_recursive_scopes_are_marked_everywhere_a_waiver_is_shown() -> None:
    deep, flat = _waiver("B602", "path", "src/**"), _waiver("B602", "path", "src/*.py")
    assert deep.scope.recursive and not flat.scope.recursive
    assert deep.to_json()["recursive"] is True and "recursive" not in flat.to_json()
    assert "(any depth)" in deep.describe() and "(any depth)" not in flat.describe()
    assert _waiver("B602", "path", "deploy/").scope.recursive


def test_duplicate_keys_in_the_waivers_file_are_an_error_naming_both_lines(
        tmp_path: Path) -> None:
    path = tmp_path / "waivers.yaml"
    path.write_text("waivers:\n  - id: B602\n    path: src/a.py\n    owner: a\n    reason: r\n"
                    "    expires: 2099-01-01\n    path: src/**\n")
    with pytest.raises(ConfigError) as info:
        load_waivers(path)
    assert str(path) in str(info.value)
    assert "duplicate key 'path' (first on line 3, again on line 7)" in str(info.value)
