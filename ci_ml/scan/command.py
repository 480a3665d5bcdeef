"""What ``ci-ml scan <scanner>`` does: run the scan step, then write every report.

The step (cached by content hash like any other) writes ``scans/<name>.json``;
afterwards the reports are rebuilt from every scan result present in the out
dir, with the waivers applied: findings.json, report.sarif, the gl-*-report.json
files, junit.xml and summary.md.
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ci_ml.config import Config, validate
from ci_ml.console import Reporter
from ci_ml.errors import EXIT_BLOCKED, EXIT_OK
from ci_ml.fsutil import atomic_write_json, atomic_write_text
from ci_ml.pipeline.runner import RunResult, run_pipeline
from ci_ml.report.scan_summary import (
    kept_scans,
    render_scan_junit,
    render_scan_markdown,
    scan_findings_document,
)
from ci_ml.report.security import write_security_reports
from ci_ml.scan.interface import ScanResult, Severity
from ci_ml.scan.step import present_scan_results
from ci_ml.scan.waivers import Waiver, WaiverReport, apply_waivers, configured_waivers


@dataclass(frozen=True)
class ScanOutcome:
    run: RunResult
    scans: Mapping[str, ScanResult]
    waivers: WaiverReport | None
    written: tuple[str, ...]
    exit_code: int
    above_threshold: int = 0
    not_covered: tuple[str, ...] = ()   # gaps of an incomplete scan no waiver accepts


def with_overrides(config: Config, scanner: str, overrides: Mapping[str, Any]) -> Config:
    """The config with ``scan.<scanner>`` keys replaced (command-line options) and the
    scanner enabled: asking for a scan by name runs it even if the config disables it."""
    data = copy.deepcopy(dict(config.data))
    scan = data.setdefault("scan", {})
    section = scan.setdefault(scanner, {})
    section["enabled"] = True
    given = {k: v for k, v in overrides.items() if v is not None and v != ()}
    for key, value in given.items():
        if key == "advisories":
            scan.setdefault("deps", {})["advisories"] = str(value)
        elif key == "waivers":
            scan["waivers"] = str(value)
        else:
            section[key] = list(value) if isinstance(value, tuple | list) else value
    # An image named on the command line replaces the configured archive, and vice versa.
    if scanner == "image" and "image" in given:
        section["input"] = None
    if scanner == "image" and "input" in given:
        section["image"] = None
    validate(data, config.path)
    return Config(path=config.path, data=data)


def write_scan_reports(out_dir: Path, scans: Mapping[str, ScanResult],
                       waivers: tuple[Waiver, ...] | None,
                       today: dt.date | None = None) -> tuple[WaiverReport | None, list[str]]:
    report = None
    if waivers is not None:
        report = apply_waivers([f for r in scans.values() for f in r.findings], waivers,
                               today or dt.date.today())
    written = []
    atomic_write_json(out_dir / "findings.json", scan_findings_document(scans, report))
    written.append("findings.json")
    written += write_security_reports(out_dir, scans, report)
    atomic_write_text(out_dir / "junit.xml", render_scan_junit(scans, report))
    atomic_write_text(out_dir / "summary.md", render_scan_markdown(scans, report))
    written += ["junit.xml", "summary.md"]
    return report, written


def run_scan_command(config: Config, scanner: str, out_dir: Path, *, quiet: bool = False,
                     force: bool = False, fail_on: str | None = None,
                     today: dt.date | None = None) -> ScanOutcome:
    waivers = configured_waivers(config)  # a malformed waivers file stops us before any scan
    run = run_pipeline(config, out_dir, only=[f"scan-{scanner}"], force=force,
                       reporter=Reporter(quiet=quiet))
    scans = present_scan_results(out_dir)
    report, written = write_scan_reports(out_dir, scans, waivers) if scans else (None, [])
    code = run.exit_code
    above = 0
    gaps = scans[scanner].gaps if scanner in scans else ()
    not_covered = tuple(g.title for g in apply_waivers(
        gaps, waivers or (), today or dt.date.today()).kept)
    if code == EXIT_OK and not_covered:
        code = EXIT_BLOCKED   # an incomplete scan is never a clean one
    if fail_on and scanner in scans:
        threshold = Severity.parse(fail_on)
        kept = kept_scans({scanner: scans[scanner]}, report)[scanner]
        above = sum(1 for f in kept.findings if f.severity >= threshold)
        if code == EXIT_OK and above:
            code = EXIT_BLOCKED
    return ScanOutcome(run, scans, report, tuple(written), code, above, not_covered)
