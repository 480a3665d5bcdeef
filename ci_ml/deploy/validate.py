"""Offline checks of rendered manifests: the Kubernetes schemas and ``trivy config``.

``kubernetes-validate`` checks every document against the official JSON schemas
of the configured Kubernetes version, strictly (an unknown field is an error).
``trivy config`` runs its embedded misconfiguration checks (``--skip-check-update``,
so no network); a HIGH or CRITICAL finding blocks. A validator that is missing or
crashes is a tool failure, never a pass.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ci_ml.errors import ToolError
from ci_ml.scan.interface import ScanError, Severity
from ci_ml.scan.tool import find_tool, parse_json_output, run_tool, version_of

BLOCKING = frozenset({Severity.HIGH, Severity.CRITICAL})


@dataclass(frozen=True)
class SchemaProblem:
    file: str
    resource: str
    message: str


@dataclass(frozen=True)
class Misconfig:
    file: str
    id: str
    severity: Severity
    title: str
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "id": self.id, "severity": self.severity.label,
                "title": self.title, "message": self.message}


def validate_schemas(docs: Sequence[tuple[str, Mapping[str, Any]]],
                     kubernetes_version: str) -> tuple[str, list[SchemaProblem]]:
    """Validate (file, document) pairs; returns the schema version used and the problems."""
    try:
        import kubernetes_validate
        from kubernetes_validate.utils import (
            InvalidSchemaError,
            SchemaNotFoundError,
            ValidationError,
            VersionNotSupportedError,
        )
    except ImportError as exc:
        raise ToolError("kubernetes-validate is not installed (pip install kubernetes-validate);"
                        " the manifests were not validated") from exc
    problems = []
    used = kubernetes_version
    for file, doc in docs:
        resource = f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"
        try:
            used = kubernetes_validate.validate(dict(doc), kubernetes_version, strict=True)
        except ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            problems.append(SchemaProblem(file, resource, f"{path}: {exc.message}"))
        except (SchemaNotFoundError, InvalidSchemaError) as exc:
            problems.append(SchemaProblem(file, resource, f"no schema: {exc.message}"))
        except VersionNotSupportedError as exc:
            raise ToolError(f"kubernetes-validate has no schemas for Kubernetes "
                            f"{kubernetes_version}: {exc}") from exc
    return used, problems


def trivy_version() -> str:
    line = version_of([find_tool("trivy"), "--version"], "trivy")
    return line.split()[-1]


def trivy_config(directory: Path) -> list[Misconfig]:
    """Run ``trivy config`` offline on a directory of manifests; raises ToolError if it fails."""
    try:
        cmd = [find_tool("trivy"), "config", "--skip-check-update", "--format", "json",
               "--quiet", str(directory)]
        proc = run_tool(cmd, tool="trivy", timeout=300)
        doc = parse_json_output(proc.stdout, "trivy")
    except ScanError as exc:
        raise ToolError(f"trivy config did not run: {exc.message}") from exc
    if not isinstance(doc, dict):
        raise ToolError("trivy config printed JSON that is not a report object")
    out = []
    for result in doc.get("Results") or ():
        for m in result.get("Misconfigurations") or ():
            if m.get("Status", "FAIL") != "FAIL":
                continue
            out.append(Misconfig(str(result.get("Target", "?")), str(m.get("ID", "?")),
                                 Severity.parse(m.get("Severity")), str(m.get("Title", "")),
                                 str(m.get("Message", ""))))
    return out
