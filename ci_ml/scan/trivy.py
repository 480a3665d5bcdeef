"""Running trivy and normalizing its JSON report (misconfigurations, secrets, vulnerabilities).

Offline-safe flags: ``--skip-check-update`` makes trivy fall back to the
misconfiguration checks embedded in its binary, the in-memory cache backend
avoids a shared on-disk cache (and its lock) between concurrent runs, and
without ``--scanners vuln`` no vulnerability DB is needed. Secrets in the
report are already masked by trivy (``****``); only the masked match is kept.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ci_ml.fsutil import sha256_bytes
from ci_ml.scan.interface import Confidence, Finding, Location, ScanError, Severity
from ci_ml.scan.tool import DEFAULT_TIMEOUT_S, find_tool, parse_json_output, run_tool, tool_version

# The empty strings disable trivy's tree-local files (read from the working directory,
# the project under review): trivy.yaml, .trivyignore, trivy-secret.yaml. The findings they
# would hide are reported instead (source_suppressions.trivy_ignores).
COMMON_FLAGS = ("--skip-version-check", "--disable-telemetry", "--no-progress",
                "--cache-backend", "memory", "--config", "", "--ignorefile", "",
                "--secret-config", "")


def trivy_version() -> str:
    return tool_version("trivy")


def run_trivy(args: Sequence[str], *, cwd: Path, timeout: float = DEFAULT_TIMEOUT_S) -> Any:
    """Run ``trivy <args>`` (JSON or CycloneDX on stdout) and parse it; ScanError on any failure."""
    cmd = [find_tool("trivy"), *args, *COMMON_FLAGS, "--timeout", f"{max(int(timeout), 1)}s"]
    proc = run_tool(cmd, tool="trivy", cwd=cwd, timeout=timeout + 30)
    doc = parse_json_output(proc.stdout, "trivy", proc.stderr)
    if not isinstance(doc, dict):
        raise ScanError("trivy printed JSON that is not a report object; the scan did not run")
    return doc


def check_report(doc: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The ``Results`` of a trivy JSON report (schema version 2), validated."""
    if doc.get("SchemaVersion") != 2:
        raise ScanError(f"trivy report has SchemaVersion {doc.get('SchemaVersion')!r}, "
                        "expected 2; the scan did not run")
    results = doc.get("Results") or []
    if not isinstance(results, list) or not all(isinstance(r, dict) for r in results):
        raise ScanError("trivy report 'Results' is not a list of objects; the scan did not run")
    return results


@dataclass(frozen=True)
class Where:
    """How to place trivy's targets: a path prefix (repo scans) or an image (image scans)."""

    prefix: str = ""
    image: str | None = None
    digest: str | None = None
    artifact: str | None = None   # trivy's ArtifactName: the target of image-config results

    def path(self, target: str) -> str | None:
        if not target or (self.artifact is not None and target == self.artifact):
            return None  # the image's own config (its history as a Dockerfile), not a file
        if self.image:
            return target.lstrip("/")
        if self.prefix and self.prefix != ".":
            return f"{self.prefix.rstrip('/')}/{target}"
        return target


def _hash(*parts: object) -> str:
    return sha256_bytes("\x00".join(str(p) for p in parts).encode())[:16]


def _layer(item: Mapping[str, Any]) -> str | None:
    layer = item.get("Layer") or {}
    return str(layer["DiffID"]) if isinstance(layer, Mapping) and layer.get("DiffID") else None


def misconfig_findings(result: Mapping[str, Any], scanner: str, where: Where) -> Iterator[Finding]:
    target = str(result.get("Target", ""))
    for m in result.get("Misconfigurations") or ():
        if str(m.get("Status", "FAIL")).upper() != "FAIL":
            continue
        cause = m.get("CauseMetadata") or {}
        refs = [str(u) for u in (m.get("PrimaryURL"), *(m.get("References") or ())) if u]
        yield Finding(
            id=str(m.get("ID") or m.get("AVDID")), rule=str(m.get("Title") or m.get("ID")),
            scanner=scanner, severity=Severity.parse(m.get("Severity")),
            confidence=Confidence.HIGH, title=str(m.get("Message") or m.get("Title") or ""),
            location=Location(path=where.path(target),
                              line=int(cause.get("StartLine") or 0) or None,
                              image=where.image, digest=where.digest, layer=_layer(m)),
            references=tuple(dict.fromkeys(refs)),
            raw={"type": m.get("Type"), "namespace": m.get("Namespace"),
                 "target": target, "class": result.get("Class"),
                 "resolution": m.get("Resolution"), "description": m.get("Description"),
                 "resource": cause.get("Resource"), "end_line": cause.get("EndLine"),
                 "code_hash": _hash(target, m.get("Message"), cause.get("Resource"))},
        )


def secret_findings(result: Mapping[str, Any], scanner: str, where: Where) -> Iterator[Finding]:
    target = str(result.get("Target", ""))
    for s in result.get("Secrets") or ():
        # "Match" is trivy's masked line (the secret replaced by *): safe to keep and hash.
        match = str(s.get("Match", ""))
        yield Finding(
            id=str(s.get("RuleID")), rule=str(s.get("Title") or s.get("RuleID")),
            scanner=scanner, severity=Severity.parse(s.get("Severity")),
            confidence=Confidence.HIGH,
            title=f"{s.get('Title') or s.get('RuleID')} in {where.path(target) or target}",
            location=Location(path=where.path(target), line=int(s.get("StartLine") or 0) or None,
                              image=where.image, digest=where.digest, layer=_layer(s)),
            references=("https://trivy.dev/latest/docs/scanner/secret/",),
            raw={"category": s.get("Category"), "match": match, "end_line": s.get("EndLine"),
                 "target": target, "code_hash": _hash(target, s.get("RuleID"), match)},
        )


def vulnerability_findings(result: Mapping[str, Any], scanner: str,
                           where: Where) -> Iterator[Finding]:
    """Trivy's own vulnerability matches (online mode, with its DB)."""
    target = str(result.get("Target", ""))
    for v in result.get("Vulnerabilities") or ():
        refs = [str(u) for u in (v.get("PrimaryURL"), *(v.get("References") or ())) if u]
        fixed = str(v.get("FixedVersion") or "").split(",")[0].strip() or None
        cwes = tuple(str(c) for c in v.get("CweIDs") or ())
        yield Finding(
            id=str(v.get("VulnerabilityID")), rule="vulnerable-package", scanner=scanner,
            severity=Severity.parse(v.get("Severity")), confidence=Confidence.HIGH,
            title=str(v.get("Title") or v.get("VulnerabilityID")),
            location=Location(path=where.path(str(v.get("PkgPath") or "")),
                              package=str(v.get("PkgName")),
                              version=str(v.get("InstalledVersion")), image=where.image,
                              digest=where.digest, layer=_layer(v)),
            fix_version=fixed, references=tuple(dict.fromkeys(refs)), aliases=cwes,
            raw={"target": target, "class": result.get("Class"), "type": result.get("Type"),
                 "status": v.get("Status"), "severity_source": v.get("SeveritySource"),
                 "cvss": v.get("CVSS"), "description": v.get("Description"),
                 "fixed_version": v.get("FixedVersion")},
        )


def report_findings(doc: Mapping[str, Any], scanner: str, where: Where) -> list[Finding]:
    findings: list[Finding] = []
    for result in check_report(doc):
        findings += misconfig_findings(result, scanner, where)
        findings += secret_findings(result, scanner, where)
        findings += vulnerability_findings(result, scanner, where)
    return findings
