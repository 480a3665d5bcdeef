"""Validate ci-ml's SARIF and GitLab reports against the official schemas (vendored copies)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

SCHEMAS = Path(__file__).resolve().parents[2] / "fixtures" / "schemas"
GITLAB_FILES = {
    "gl-sast-report.json": "sast", "gl-dependency-scanning-report.json": "dependency-scanning",
    "gl-container-scanning-report.json": "container-scanning", "gl-dast-report.json": "dast",
}


@cache
def _validator(name: str) -> jsonschema.protocols.Validator:
    schema = json.loads((SCHEMAS / name).read_text("utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema, format_checker=jsonschema.FormatChecker())


def errors(doc: Any, schema_name: str) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message[:200]}"
            for e in _validator(schema_name).iter_errors(doc)]


def assert_valid_sarif(doc: Any) -> None:
    problems = errors(doc, "sarif-schema-2.1.0.json")
    assert not problems, problems


def assert_valid_gitlab(doc: Any, kind: str) -> None:
    """kind: sast, dependency-scanning, container-scanning or dast."""
    problems = errors(doc, f"gitlab-15.2.1/{kind}-report-format.json")
    assert not problems, problems


def assert_reports_valid(out_dir: Path) -> list[str]:
    """Validate report.sarif and every gl-*-report.json in out_dir; return the names checked."""
    checked = []
    sarif = out_dir / "report.sarif"
    if sarif.is_file():
        assert_valid_sarif(json.loads(sarif.read_text("utf-8")))
        checked.append(sarif.name)
    for name, kind in GITLAB_FILES.items():
        path = out_dir / name
        if path.is_file():
            assert_valid_gitlab(json.loads(path.read_text("utf-8")), kind)
            checked.append(name)
    return checked
