"""findings.json: every scanner's normalized findings and status in one document."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from ci_ml.scan.interface import ScanResult, Severity


def severity_counts(scans: Mapping[str, ScanResult]) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for result in scans.values():
        counts.update(f.severity.label for f in result.findings)
    return {s.label: counts.get(s.label, 0) for s in sorted(Severity, reverse=True)}


def findings_document(scans: Mapping[str, ScanResult]) -> dict[str, Any]:
    findings = [f.to_json() for name in sorted(scans) for f in scans[name].findings]
    return {
        "scans": {
            name: {"status": r.status.value, "tool": r.tool, "tool_version": r.tool_version,
                   "error": r.error, "findings": len(r.findings), "targets": list(r.targets)}
            for name, r in sorted(scans.items())
        },
        "counts": severity_counts(scans),
        "findings": findings,
    }
