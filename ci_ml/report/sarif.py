"""report.sarif: SARIF 2.1.0 for GitHub code scanning, one run per scanner.

Each run has its own ``automationDetails.id`` (``ci-ml/<scanner>/``), which
GitHub uses as the analysis category, so uploading code, deps, image, iac and
model results together never makes one hide another. Rules carry
``properties.security-severity`` (GitHub's severity), results carry
``partialFingerprints`` (stable across runs), waived findings are kept with a
``suppressions`` entry (owner, reason, expiry), a suppression written in the code
(``# nosec``, a tree-local bandit config) is an ``inSource`` suppression with status
``rejected`` unless a waiver covers the finding, and a scan that did not run is
a run with ``executionSuccessful: false``, never an empty clean run.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import ci_ml
from ci_ml.scan.interface import Finding, ScanResult, ScanStatus, Severity
from ci_ml.scan.waivers import Waiver

_VERSION = re.compile(r"\d+(?:\.\d+)*(?:[-+.]?[0-9A-Za-z]+)*")
SARIF_SCHEMA = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
FINGERPRINT_KEY = "ciMlFingerprint/v1"
# GitHub: >= 9.0 critical, 7.0-8.9 high, 4.0-6.9 medium, 0.1-3.9 low. Unknown counts as medium.
SECURITY_SEVERITY = {Severity.CRITICAL: 9.5, Severity.HIGH: 8.0, Severity.MEDIUM: 5.5,
                     Severity.LOW: 2.0, Severity.INFO: 0.0, Severity.UNKNOWN: 5.0}
LEVEL = {Severity.CRITICAL: "error", Severity.HIGH: "error", Severity.MEDIUM: "warning",
         Severity.UNKNOWN: "warning", Severity.LOW: "note", Severity.INFO: "note"}
TOOL_URIS = {"bandit": "https://bandit.readthedocs.io/", "pip-audit": "https://pypi.org/project/pip-audit/",
             "trivy": "https://trivy.dev/", "ci-ml": "https://pypi.org/project/ci-ml/"}


def security_severity(finding: Finding) -> float:
    score = finding.raw.get("cvss_score")
    if isinstance(score, int | float) and 0 <= score <= 10:
        return float(score)
    return SECURITY_SEVERITY[finding.severity]


def short_description(finding: Finding) -> str:
    """A rule's one-line name: the tool's rule title if it reads as words, else the finding's."""
    text = finding.rule if " " in finding.rule else finding.title
    return (text or finding.id)[:255]


def _uri(path: str) -> str:
    # A relative reference: ':' is encoded so "app:1" or "C:x" never reads as a URI scheme.
    return quote(path.lstrip("/"), safe="/@-._~")


def _location(finding: Finding) -> dict[str, Any] | None:
    loc = finding.location
    if loc.path or loc.image:
        uri = _uri(loc.path or loc.image or "")
    elif loc.url:
        uri = loc.url
    else:
        return None
    physical: dict[str, Any] = {"artifactLocation": {"uri": uri}}
    if loc.path and not loc.image:
        # Project files are relative to the project root; paths inside an image are not.
        physical["artifactLocation"]["uriBaseId"] = "%SRCROOT%"
    # A finding about a whole file (or URL) points at its first line, as GitHub shows it.
    physical["region"] = {"startLine": loc.line if loc.path and loc.line else 1}
    out: dict[str, Any] = {"physicalLocation": physical}
    logical = []
    if loc.package:
        name = f"{loc.package}@{loc.version}" if loc.version else loc.package
        logical.append({"name": name, "kind": "package"})
    if loc.image:
        logical.append({"name": loc.image, "kind": "image"})
    if logical:
        out["logicalLocations"] = logical
    return out


def _rule(finding: Finding, worst: float) -> dict[str, Any]:
    description = str(finding.raw.get("description") or finding.title)
    rule: dict[str, Any] = {
        "id": finding.id,
        "name": finding.rule,
        "shortDescription": {"text": short_description(finding)},
        "fullDescription": {"text": description[:4000] or finding.title},
        "defaultConfiguration": {"level": LEVEL[finding.severity]},
        "properties": {"security-severity": f"{worst:.1f}",
                       "tags": ["security", f"ci-ml/{finding.scanner}"],
                       "precision": "high" if finding.confidence.value >= 3 else "medium"},
    }
    refs = [r for r in finding.references if r.startswith(("http://", "https://"))]
    if refs:
        rule["helpUri"] = refs[0]
    rule["help"] = _help(finding, description, refs)
    return rule


def _help(finding: Finding, description: str, refs: list[str]) -> dict[str, str]:
    """GitHub shows a rule's help beside every alert (and rejects rules without one): what
    to do first (the tool's solution or fixed version), then what it is, then references."""
    todo = str(finding.raw.get("solution") or finding.raw.get("resolution") or "").strip()
    if finding.fix_version:
        what = finding.location.package or "the package"
        todo = (todo + "\n" if todo else "") + f"Upgrade {what} to {finding.fix_version} or later."
    parts = [p for p in (todo, description.strip()[:4000]) if p]
    text = "\n\n".join(parts + (["References:\n" + "\n".join(refs)] if refs else []))
    markdown = "\n\n".join(parts + (["**References**\n\n" + "\n".join(f"- <{r}>" for r in refs)]
                                     if refs else []))
    return {"text": text or finding.title or finding.id, "markdown": markdown or finding.id}


def numeric_version(version: str) -> str | None:
    """``ZAP 2.16.1`` -> ``2.16.1``: SARIF consumers compare versions that start with a number."""
    match = _VERSION.search(version or "")
    return match.group(0) if match else None


def _result(finding: Finding, rule_index: int, waiver: Waiver | None) -> dict[str, Any]:
    props: dict[str, Any] = {"severity": finding.severity.label,
                             "security-severity": f"{security_severity(finding):.1f}"}
    if finding.location.package:
        props["package"] = finding.location.package
        props["installedVersion"] = finding.location.version
    if finding.fix_version:
        props["fixVersion"] = finding.fix_version
    if finding.aliases:
        props["aliases"] = list(finding.aliases)
    if finding.location.layer:
        props["imageLayer"] = finding.location.layer
    result: dict[str, Any] = {
        "ruleId": finding.id, "ruleIndex": rule_index, "level": LEVEL[finding.severity],
        "message": {"text": finding.title or finding.rule},
        "partialFingerprints": {FINGERPRINT_KEY: finding.fingerprint},
        "properties": props,
    }
    location = _location(finding)
    if location:
        result["locations"] = [location]
    suppressions = []
    in_source = finding.suppressed_in_source
    if in_source is not None:
        # Written in the tree under review: shown, never obeyed. "rejected" keeps the result
        # open for viewers (GitHub, GitLab's SARIF import); a waiver's acceptance is separate.
        suppressions.append({
            "kind": "inSource", "status": "accepted" if waiver is not None else "rejected",
            "justification": (f"{in_source.describe()}: ci-ml reports in-code suppressions "
                              "and does not obey them; " + (
                                  f"accepted by waiver {waiver.id}" if waiver is not None
                                  else "only a waiver can accept this finding")),
            "properties": {"origin": in_source.origin, "path": in_source.path,
                           "line": in_source.line},
        })
    if waiver is not None:
        suppressions.append({
            "kind": "external", "status": "accepted",
            "justification": f"{waiver.reason} (owner {waiver.owner}, expires "
                             f"{waiver.expires.isoformat()})",
            "properties": {"owner": waiver.owner, "expires": waiver.expires.isoformat()},
        })
    if suppressions:
        result["suppressions"] = suppressions
    return result


def sarif_run(result: ScanResult, waived: Mapping[str, Waiver]) -> dict[str, Any]:
    findings = sorted(result.findings, key=lambda f: (f.id, f.location.describe(), f.fingerprint))
    worst: dict[str, float] = {}
    for f in findings:
        worst[f.id] = max(worst.get(f.id, 0.0), security_severity(f))
    rules: list[dict[str, Any]] = []
    index: dict[str, int] = {}
    for f in findings:
        if f.id not in index:
            index[f.id] = len(rules)
            rules.append(_rule(f, worst[f.id]))
    # An incomplete scan ran (its results are real); what it could not cover is an error
    # notification each, and properties.status says "incomplete".
    invocation: dict[str, Any] = {"executionSuccessful": result.status is not ScanStatus.ERROR}
    if result.started_at:
        invocation["startTimeUtc"] = result.started_at + "Z"
    if result.finished_at:
        invocation["endTimeUtc"] = result.finished_at + "Z"
    notifications = []
    if result.status is ScanStatus.ERROR:
        notifications.append({"level": "error",
                              "message": {"text": f"scan did not run: {result.error}"}})
    notifications += [{"level": "error", "message": {"text": f"not covered: {g.title}"}}
                      for g in result.gaps]
    notifications += [{"level": "note", "message": {"text": n}} for n in result.notes]
    if notifications:
        invocation["toolExecutionNotifications"] = notifications
    driver: dict[str, Any] = {"name": result.tool or result.scanner,
                              "informationUri": TOOL_URIS.get(result.tool, TOOL_URIS["ci-ml"]),
                              "rules": rules}
    version = numeric_version(result.tool_version or "")
    if version is None:
        # The tool did not run (or said no version): the run is ci-ml's report of that.
        driver.update(name="ci-ml", informationUri=TOOL_URIS["ci-ml"])
        version = ci_ml.__version__
    driver["version"] = version
    if result.tool_version and result.tool_version != version:
        driver["properties"] = {"versionText": result.tool_version}
    return {
        "tool": {"driver": driver},
        "automationDetails": {"id": f"ci-ml/{result.scanner}/"},
        "invocations": [invocation],
        "originalUriBaseIds": {"%SRCROOT%": {"description": {
            "text": "The project directory (where ci-ml.yaml is)"}}},
        "results": [_result(f, index[f.id], waived.get(f.fingerprint)) for f in findings],
        "properties": {"scanner": result.scanner, "status": result.status.value,
                       "targets": list(result.targets), "ciMlVersion": ci_ml.__version__},
    }


def render_sarif(scans: Mapping[str, ScanResult],
                 waived: Mapping[str, Waiver] | None = None) -> dict[str, Any]:
    """The SARIF log: one run per scan result, waived findings marked as suppressed."""
    return {"$schema": SARIF_SCHEMA, "version": "2.1.0",
            "runs": [sarif_run(scans[name], waived or {}) for name in sorted(scans)]}
