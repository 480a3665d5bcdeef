"""Security reports for CI systems from scan results: report.sarif and the GitLab reports.

``write_security_reports`` is what the gate step and every ``ci-ml scan``
command call; waived findings are marked suppressed in SARIF and left out of
the GitLab reports.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from ci_ml.fsutil import atomic_write_text
from ci_ml.report.gitlab import FILE_NAMES, gitlab_reports
from ci_ml.report.sarif import render_sarif
from ci_ml.scan.interface import ScanResult
from ci_ml.scan.waivers import Waiver, WaiverReport

SARIF_NAME = "report.sarif"


def _waived(report: WaiverReport | None) -> dict[str, Waiver]:
    if report is None:
        return {}
    return {s.finding.fingerprint: s.waiver for s in report.suppressed}


def write_security_reports(dest_dir: Path, scans: Mapping[str, ScanResult],
                           waivers: WaiverReport | None) -> list[str]:
    """Write report.sarif and the gl-*-report.json files the present scanners feed.

    Returns the names written, relative to ``dest_dir``. Nothing is written for no scans.
    """
    if not scans:
        return []
    waived = _waived(waivers)
    written: list[str] = []
    atomic_write_text(dest_dir / SARIF_NAME,
                      json.dumps(render_sarif(scans, waived), indent=2) + "\n")
    written.append(SARIF_NAME)
    for kind, report in gitlab_reports(scans, frozenset(waived)).items():
        atomic_write_text(dest_dir / FILE_NAMES[kind], json.dumps(report, indent=2) + "\n")
        written.append(FILE_NAMES[kind])
    return written
