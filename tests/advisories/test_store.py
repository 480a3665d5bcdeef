"""The advisory directory: lazy per-package parsing, queries, and bad directories."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ci_ml.advisories.store import AdvisoryDB
from ci_ml.errors import InputError
from ci_ml.scan.interface import Severity

PYPA = Path(__file__).resolve().parents[2] / "fixtures" / "advisories" / "pypa-vulns"


def _record(vid: str, package: str, fixed: str = "2.0", **extra: object) -> dict[str, object]:
    return {"id": vid, "modified": "2024-01-01T00:00:00Z",
            "affected": [{"package": {"name": package, "ecosystem": "PyPI"},
                          "ranges": [{"type": "ECOSYSTEM",
                                      "events": [{"introduced": "0"}, {"fixed": fixed}]}]}],
            **extra}


def test_planted_pins_match_the_pypa_snapshot() -> None:
    db = AdvisoryDB(PYPA)
    assert {a.id for a in db.query("requests", "2.19.0")} == {"PYSEC-2018-28", "PYSEC-2023-74"}
    assert {a.id for a in db.query("PyYAML", "5.3")} == {"PYSEC-2020-96", "PYSEC-2021-142"}
    assert {a.id for a in db.query("Jinja2", "2.10")} == {"PYSEC-2019-217", "PYSEC-2021-66"}
    assert db.query("requests", "2.32.3") == []


def test_example_pins_have_no_advisory() -> None:
    db = AdvisoryDB(PYPA)
    example = Path(__file__).resolve().parents[2] / "fixtures" / "example" / "requirements.txt"
    for line in example.read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            assert db.query(name.strip(), version.strip()) == [], line


def test_only_the_asked_package_is_parsed() -> None:
    db = AdvisoryDB(PYPA)
    assert db.packages > 600
    db.query("requests", "2.19.0")
    assert set(db._loaded) == {"requests"}


def test_fix_version_aliases_and_cvss_severity() -> None:
    db = AdvisoryDB(PYPA)
    adv = db.find("requests", ["CVE-2018-18074"])
    assert adv is not None and adv.id == "PYSEC-2018-28"
    assert adv.fix_for("requests", "2.19.0") == "2.20.0"
    assert adv.severity(Severity.MEDIUM) == (Severity.MEDIUM, "default")  # no CVSS in the record
    scored = next(a for p in ("aiohttp", "django", "pillow", "urllib3")
                  for a in db.for_package(p) if a.cvss_score is not None)
    severity, source = scored.severity(Severity.LOW)
    assert source == "cvss" and severity >= Severity.LOW


def test_flat_json_directory_and_withdrawn_records(tmp_path: Path) -> None:
    (tmp_path / "A-1.json").write_text(json.dumps(_record("A-1", "Foo_Bar")))
    (tmp_path / "A-2.json").write_text(json.dumps(_record("A-2", "foo-bar", withdrawn="2024")))
    db = AdvisoryDB(tmp_path)
    found = db.query("foo.bar", "1.0")
    assert sorted(a.id for a in found) == ["A-1", "A-2"]
    assert [a.withdrawn for a in sorted(found, key=lambda a: a.id)] == [False, True]


def test_yaml_timestamps_become_rfc3339_strings(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "X-1.yaml").write_text(
        "id: X-1\nmodified: 2021-06-16T00:03:24Z\naffected:\n- package: {name: pkg, "
        "ecosystem: PyPI}\n  versions: ['1.0']\n")
    adv = AdvisoryDB(tmp_path).query("pkg", "1.0")[0]
    assert adv.record["modified"] == "2021-06-16T00:03:24Z"
    json.dumps(adv.record)


@pytest.mark.parametrize(("content", "message"), [
    ("id: [unclosed\n", "YAML syntax error"),
    ("id: A-1\nid: A-2\n", "duplicate key 'id'"),
    ("details: no id here\n", "no 'id'"),
])
def test_broken_record_is_an_input_error_naming_the_file(tmp_path: Path, content: str,
                                                         message: str) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "BAD-1.yaml").write_text(content)
    db = AdvisoryDB(tmp_path)
    with pytest.raises(InputError, match=message) as info:
        db.query("pkg", "1.0")
    assert "BAD-1.yaml" in str(info.value)


def test_not_a_directory_or_empty(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a directory"):
        AdvisoryDB(tmp_path / "missing")
    with pytest.raises(InputError, match="holds no OSV records"):
        AdvisoryDB(tmp_path)
