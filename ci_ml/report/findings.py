"""findings.json: every scanner's normalized findings and status in one document."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from ci_ml.scan.interface import Finding, ScanResult, Severity
from ci_ml.scan.waivers import WaiverReport


def _counts(findings: Iterable[Finding]) -> dict[str, int]:
    counts: Counter[str] = Counter(f.severity.label for f in findings)
    return {s.label: counts.get(s.label, 0) for s in sorted(Severity, reverse=True)}


def severity_counts(scans: Mapping[str, ScanResult]) -> dict[str, int]:
    return _counts(f for result in scans.values() for f in result.findings)


def findings_document(scans: Mapping[str, ScanResult],
                      waivers: WaiverReport | None = None) -> dict[str, Any]:
    """``counts`` is every finding; ``counts_after_waivers`` what the budgets weigh. A waived
    finding carries ``waived_by`` (the waiver's id)."""
    waived_by = {id(s.finding): s.waiver.id for s in waivers.suppressed} if waivers else {}
    findings = []
    for name in sorted(scans):
        for f in scans[name].findings:
            doc = f.to_json()
            if id(f) in waived_by:
                doc["waived_by"] = waived_by[id(f)]
            findings.append(doc)
    kept = waivers.kept if waivers else [f for r in scans.values() for f in r.findings]
    return {
        "scans": {
            name: {"status": r.status.value, "tool": r.tool, "tool_version": r.tool_version,
                   "error": r.error, "findings": len(r.findings), "targets": list(r.targets),
                   "not_covered": [g.to_json() for g in r.gaps]}
            for name, r in sorted(scans.items())
        },
        "counts": severity_counts(scans),
        "counts_after_waivers": _counts(kept),
        "waived": len(waived_by),
        "suppressed_in_source": in_source_json(scans, waivers),
        "findings": findings,
    }


def in_source_json(scans: Mapping[str, ScanResult],
                   waivers: WaiverReport | None) -> list[dict[str, Any]]:
    """Every finding the tree under review tried to suppress (``# nosec``, a tree-local bandit
    config): still counted unless a waiver covers it."""
    out = []
    for name in sorted(scans):
        for f in scans[name].findings:
            if f.suppressed_in_source is None:
                continue
            waiver = waivers.waiver_for(f) if waivers else None
            out.append({"fingerprint": f.fingerprint, "id": f.id, "scanner": f.scanner,
                        "severity": f.severity.label, "where": f.location.describe(),
                        "suppression": f.suppressed_in_source.to_json(),
                        "waived_by": waiver.id if waiver else None})
    return out
