"""What a standalone ``ci-ml scan`` writes besides SARIF/GitLab: findings.json, a JUnit
report (one test per finding) and a Markdown summary for the job page."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any
from xml.etree import ElementTree as ET

from ci_ml.report.findings import findings_document
from ci_ml.scan.interface import ScanResult, ScanStatus, Severity
from ci_ml.scan.waivers import WaiverReport

MAX_MARKDOWN_ROWS = 50


def kept_scans(scans: Mapping[str, ScanResult],
               waivers: WaiverReport | None) -> dict[str, ScanResult]:
    """The scan results with waived findings removed."""
    if waivers is None:
        return dict(scans)
    gone = waivers.suppressed_fingerprints
    return {name: replace(r, findings=tuple(f for f in r.findings if f.fingerprint not in gone))
            for name, r in scans.items()}


def scan_findings_document(scans: Mapping[str, ScanResult],
                           waivers: WaiverReport | None) -> dict[str, Any]:
    """findings.json as the gate writes it (every finding; waived ones carry ``waived_by``;
    ``counts_after_waivers``), plus the waiver report and each scan's notes."""
    doc = findings_document(scans, waivers)
    doc["waivers"] = waivers.to_json() if waivers is not None else None
    for name, result in scans.items():
        doc["scans"][name]["notes"] = list(result.notes)
    return doc


def render_scan_junit(scans: Mapping[str, ScanResult], waivers: WaiverReport | None) -> str:
    suites = ET.Element("testsuites", name="ci-ml scan")
    for name in sorted(scans):
        result = scans[name]
        suite = ET.SubElement(suites, "testsuite", name=f"ci-ml scan {name}")
        ran = ET.SubElement(suite, "testcase", classname=f"ci-ml.scan.{name}",
                            name=f"{result.tool or name} ran")
        tests, failures, errors, skipped = 1, 0, 0, 0
        if result.status is ScanStatus.ERROR:
            ET.SubElement(ran, "error", message=f"scan did not run: {result.error}")
            errors += 1
        elif result.status is ScanStatus.INCOMPLETE:
            failure = ET.SubElement(ran, "failure", message=f"scan incomplete: "
                                    f"{len(result.gaps)} not covered", type="incomplete")
            failure.text = "\n".join(g.title for g in result.gaps)
            failures += 1
        for f in sorted(result.findings, key=lambda f: (-f.severity, f.id)):
            tests += 1
            case = ET.SubElement(suite, "testcase", classname=f"ci-ml.scan.{name}.{f.id}",
                                 name=f"{f.id} {f.location.describe()}")
            waiver = waivers.waiver_for(f) if waivers else None
            if waiver is not None:
                ET.SubElement(case, "skipped", message=f"waived by {waiver.owner} until "
                              f"{waiver.expires.isoformat()}: {waiver.reason}")
                skipped += 1
            else:
                failure = ET.SubElement(case, "failure", message=f"{f.severity.label}: {f.title}",
                                        type=f.severity.label)
                failure.text = "\n".join([f.title, *f.references])
                failures += 1
        suite.set("tests", str(tests))
        suite.set("failures", str(failures))
        suite.set("errors", str(errors))
        suite.set("skipped", str(skipped))
    ET.indent(suites)
    body = ET.tostring(suites, encoding="unicode")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + body + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_scan_markdown(scans: Mapping[str, ScanResult], waivers: WaiverReport | None) -> str:
    kept = kept_scans(scans, waivers)
    order = [s for s in sorted(Severity, reverse=True)]
    lines = ["## ci-ml scan", "", "| scanner | tool | status | " +
             " | ".join(s.label for s in order) + " | waived |",
             "|---|---|---|" + "---|" * (len(order) + 1)]
    for name in sorted(scans):
        result, kept_result = scans[name], kept[name]
        per = {s: sum(1 for f in kept_result.findings if f.severity is s) for s in order}
        status = {ScanStatus.OK: "ok", ScanStatus.INCOMPLETE: "**incomplete**",
                  ScanStatus.ERROR: "**did not run**"}[result.status]
        waived = len(result.findings) - len(kept_result.findings)
        lines.append(f"| {name} | {result.tool} {result.tool_version} | {status} | "
                     + " | ".join(str(per[s]) for s in order) + f" | {waived} |")
    failed = [r for r in scans.values() if r.status is ScanStatus.ERROR]
    if failed:
        lines += ["", "### Scans that did not run", ""]
        lines += [f"- **{r.scanner}**: {_cell(r.error or '')}" for r in failed]
    gaps = [(r.scanner, g.title) for r in scans.values() for g in r.gaps]
    notes = [(r.scanner, n) for r in scans.values() for n in r.notes]
    if gaps or notes:
        lines += ["", "### Not covered", ""] + [f"- {s}: **{_cell(n)}**" for s, n in gaps]
        lines += [f"- {s}: {_cell(n)}" for s, n in notes]
    in_source = [f for r in kept.values() for f in r.findings if f.suppressed_in_source]
    if in_source:
        lines += ["", "### Suppressed in code, not waived (still counted)", ""]
        lines += [f"- {f.severity.label} {_cell(f.id)} {_cell(f.location.describe())}: "
                  f"`{_cell(f.suppressed_in_source.describe())}`" for f in in_source
                  if f.suppressed_in_source][:MAX_MARKDOWN_ROWS]
    findings = sorted((f for r in kept.values() for f in r.findings),
                      key=lambda f: (-f.severity, f.scanner, f.id))
    if findings:
        lines += ["", "### Findings", "", "| severity | scanner | id | where | title | fix |",
                  "|---|---|---|---|---|---|"]
        for f in findings[:MAX_MARKDOWN_ROWS]:
            lines.append(f"| {f.severity.label} | {f.scanner} | {_cell(f.id)} | "
                         f"{_cell(f.location.describe())} | {_cell(f.title[:120])} | "
                         f"{_cell(f.fix_version or '')} |")
        if len(findings) > MAX_MARKDOWN_ROWS:
            lines.append(f"\n... and {len(findings) - MAX_MARKDOWN_ROWS} more in findings.json")
    if waivers is not None and waivers.messages():
        lines += ["", "### Waivers", ""] + [f"- {_cell(m)}" for m in waivers.messages()]
    return "\n".join(lines) + "\n"
