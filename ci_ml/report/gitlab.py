"""GitLab security reports (schema 15.2.1): sast, dependency_scanning, container_scanning, dast.

Findings go to the report their kind belongs to: code, iac and model findings
(and an image's secrets and misconfigurations, which are files) to SAST;
dependency vulnerabilities to dependency scanning; an image's package
vulnerabilities to container scanning; DAST to DAST. GitLab has no
suppression in these reports, so waived findings are left out (they are in
report.sarif and findings.json, with their waiver). A scanner that did not run
makes its report's ``scan.status`` ``failure`` with a fatal message.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import ci_ml
from ci_ml.report.sarif import short_description
from ci_ml.scan.interface import Finding, ScanResult, ScanStatus, Severity

SCHEMA_VERSION = "15.2.1"
KINDS = ("sast", "dependency_scanning", "container_scanning", "dast")
FILE_NAMES = {"sast": "gl-sast-report.json",
              "dependency_scanning": "gl-dependency-scanning-report.json",
              "container_scanning": "gl-container-scanning-report.json",
              "dast": "gl-dast-report.json"}
_SCHEMA_FILE = {"sast": "sast", "dependency_scanning": "dependency-scanning",
                "container_scanning": "container-scanning", "dast": "dast"}
SEVERITY = {Severity.CRITICAL: "Critical", Severity.HIGH: "High", Severity.MEDIUM: "Medium",
            Severity.LOW: "Low", Severity.INFO: "Info", Severity.UNKNOWN: "Unknown"}
_NAMESPACE = uuid.UUID("5d6c0f1e-9c3b-4b8e-8f7a-2c1d3e4f5a6b")


def schema_url(kind: str) -> str:
    return ("https://gitlab.com/gitlab-org/security-products/security-report-schemas/-/raw/"
            f"v{SCHEMA_VERSION}/dist/{_SCHEMA_FILE[kind]}-report-format.json")


def kind_of(finding: Finding) -> str:
    """Which GitLab report a finding belongs in."""
    if finding.scanner == "dast":
        return "dast"
    if finding.scanner == "deps":
        return "dependency_scanning"
    if finding.scanner == "image" and finding.location.package:
        return "container_scanning"
    return "sast"


def _identifiers(finding: Finding) -> list[dict[str, str]]:
    refs = [r for r in finding.references if r.startswith(("http://", "https://"))]
    primary = {"type": f"ci_ml_{finding.scanner}", "name": f"{finding.id} ({finding.rule})"[:255],
               "value": finding.id}
    if refs:
        primary["url"] = refs[0]
    out = [primary]
    for alias in finding.aliases:
        upper = alias.upper()
        if upper.startswith("CVE-"):
            out.append({"type": "cve", "name": upper, "value": upper,
                        "url": f"https://nvd.nist.gov/vuln/detail/{upper}"})
        elif upper.startswith("CWE-"):
            number = upper[4:]
            out.append({"type": "cwe", "name": upper, "value": number,
                        "url": f"https://cwe.mitre.org/data/definitions/{number}.html"})
        elif upper.startswith("GHSA-"):
            out.append({"type": "ghsa", "name": alias, "value": alias,
                        "url": f"https://github.com/advisories/{alias}"})
        elif alias:
            out.append({"type": "osv", "name": alias, "value": alias})
    return out


def _solution(finding: Finding) -> str | None:
    if finding.fix_version and finding.location.package:
        return f"Upgrade {finding.location.package} to {finding.fix_version} or later."
    resolution = finding.raw.get("resolution")
    return str(resolution)[:7000] if resolution else None


def _location(kind: str, finding: Finding) -> dict[str, Any]:
    loc = finding.location
    if kind == "dependency_scanning":
        return {"file": loc.path or "requirements.txt",
                "dependency": {"package": {"name": loc.package or "unknown"},
                               "version": loc.version or "", "direct": True}}
    if kind == "container_scanning":
        return {"dependency": {"package": {"name": loc.package or "unknown"},
                               "version": loc.version or ""},
                "operating_system": str(finding.raw.get("os") or "Unknown"),
                "image": loc.image or "unknown"}
    if kind == "dast":
        parts = urlsplit(loc.url or "")
        out: dict[str, Any] = {"method": str(finding.raw.get("method") or "GET"),
                               "path": parts.path or "/"}
        if parts.scheme and parts.netloc:
            out["hostname"] = f"{parts.scheme}://{parts.netloc}"
        if finding.raw.get("param"):
            out["param"] = str(finding.raw["param"])
        return out
    out = {}
    path = loc.path or loc.image
    if loc.image and loc.path:
        path = f"{loc.image}:{loc.path}"
    if path:
        out["file"] = path
    if loc.line:
        out["start_line"] = loc.line
        end = finding.raw.get("end_line")
        if isinstance(end, int) and end >= loc.line:
            out["end_line"] = end
    return out


def _vulnerability(kind: str, finding: Finding) -> dict[str, Any]:
    description = str(finding.raw.get("description") or finding.title)
    if finding.suppressed_in_source is not None:
        # GitLab reports have no suppression field: say it where a reviewer reads.
        description = (f"Suppressed in code by {finding.suppressed_in_source.describe()}; "
                       "ci-ml does not obey in-code suppressions (only a waiver accepts a "
                       f"finding). {description}")
    vuln: dict[str, Any] = {
        "id": str(uuid.uuid5(_NAMESPACE, f"{kind}:{finding.fingerprint}")),
        "name": short_description(finding),
        "description": description[:1048576],
        "severity": SEVERITY[finding.severity],
        "identifiers": _identifiers(finding),
        "location": _location(kind, finding),
    }
    solution = _solution(finding)
    if solution:
        vuln["solution"] = solution
    links = [{"url": r} for r in dict.fromkeys(finding.references)
             if r.startswith(("http://", "https://"))]
    if links:
        vuln["links"] = links
    return vuln


def _time(value: str | None) -> str:
    return value or dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")


def gitlab_report(kind: str, results: Sequence[ScanResult],
                  suppressed: frozenset[str] = frozenset()) -> dict[str, Any]:
    """One GitLab report of ``kind`` from the scan results that feed it."""
    findings = [f for r in results for f in r.findings
                if kind_of(f) == kind and f.fingerprint not in suppressed]
    findings.sort(key=lambda f: (f.scanner, f.id, f.location.describe(), f.fingerprint))
    failed = [r for r in results if r.status is ScanStatus.ERROR]
    incomplete = [r for r in results if r.status is ScanStatus.INCOMPLETE]
    tools = sorted({f"{r.tool} {r.tool_version}".strip() for r in results if r.tool})
    starts = [r.started_at for r in results if r.started_at]
    ends = [r.finished_at for r in results if r.finished_at]
    scan: dict[str, Any] = {
        "analyzer": {"id": "ci-ml", "name": "ci-ml", "version": ci_ml.__version__,
                     "vendor": {"name": "ci-ml"}},
        "scanner": {"id": "ci-ml-" + "-".join(sorted(r.scanner for r in results)),
                    "name": "ci-ml " + ", ".join(sorted(r.scanner for r in results)),
                    "version": "; ".join(tools) or ci_ml.__version__,
                    "vendor": {"name": "ci-ml"}},
        "type": kind,
        "start_time": _time(min(starts) if starts else None),
        "end_time": _time(max(ends) if ends else None),
        "status": "failure" if failed or incomplete else "success",
    }
    messages = [{"level": "fatal", "value": f"{r.scanner}: scan did not run: {r.error}"}
                for r in failed]
    messages += [{"level": "fatal", "value": f"{r.scanner}: incomplete scan, not covered: "
                  f"{g.title}"} for r in incomplete for g in r.gaps]
    messages += [{"level": "warn", "value": f"{r.scanner}: {n}"} for r in results for n in r.notes]
    if messages:
        scan["messages"] = messages
    if kind == "dast":
        scan["scanned_resources"] = [
            {"method": "GET", "url": t, "type": "url"} for r in results for t in r.targets
            if t.startswith(("http://", "https://"))]
    return {"version": SCHEMA_VERSION, "schema": schema_url(kind), "scan": scan,
            "vulnerabilities": [_vulnerability(kind, f) for f in findings]}


def gitlab_reports(scans: Mapping[str, ScanResult],
                   suppressed: frozenset[str] = frozenset()) -> dict[str, dict[str, Any]]:
    """Every report the present scanners feed: {kind: report}."""
    feeds: dict[str, list[ScanResult]] = {}
    for name in sorted(scans):
        result = scans[name]
        kinds = {"code": {"sast"}, "iac": {"sast"}, "model": {"sast"},
                 "deps": {"dependency_scanning"}, "image": {"container_scanning"},
                 "dast": {"dast"}}.get(name, {"sast"})
        kinds |= {kind_of(f) for f in result.findings}
        for kind in kinds:
            feeds.setdefault(kind, []).append(result)
    return {kind: gitlab_report(kind, feeds[kind], suppressed) for kind in KINDS if kind in feeds}
