"""Scan steps: one per scanner, each writing ``scans/<name>.json``.

A tool failure does not abort the run: the step records a "did not run" result
(status ERROR, never cached) so the gate can block on it, and the run exits 3.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

from ci_ml.config import Config
from ci_ml.fsutil import atomic_write_json
from ci_ml.pipeline.interface import Step, StepContext, StepInputs, StepOutcome, StepStatus
from ci_ml.scan.dast import dast_request
from ci_ml.scan.interface import ScanError, ScanRequest, ScanResult, ScanStatus, Severity
from ci_ml.scan.registry import SCANNERS


def scan_result_path(scanner: str) -> str:
    return f"scans/{scanner}.json"


def _code_request(config: Config, ctx: StepContext | None) -> ScanRequest:
    section = config.section("scan")["code"]
    return ScanRequest(root=config.root,
                       targets=tuple(config.resolve(p) for p in section["paths"]),
                       options={"exclude": list(section["exclude"])})


RequestBuilder = Callable[[Config, StepContext | None], ScanRequest]
REQUEST_BUILDERS: dict[str, RequestBuilder] = {
    "code": _code_request,
    "dast": dast_request,
}


def summarize(result: ScanResult) -> str:
    if result.status is ScanStatus.ERROR:
        return f"did not run: {result.error}"
    counts: dict[str, int] = {}
    for f in result.findings:
        counts[f.severity.label] = counts.get(f.severity.label, 0) + 1
    order = [s.label for s in sorted(Severity, reverse=True)]
    parts = [f"{counts[s]} {s}" for s in order if s in counts]
    return f"{len(result.findings)} finding(s)" + (f" ({', '.join(parts)})" if parts else "")


def run_scan(scanner_name: str, request: ScanRequest) -> ScanResult:
    scanner = SCANNERS[scanner_name]()
    try:
        return scanner.scan(request)
    except ScanError as exc:
        return ScanResult.failed(scanner_name, scanner.tool, exc.message)


class ScanStep(Step):
    scanner: ClassVar[str]
    after: ClassVar[tuple[str, ...]] = ()

    def enabled(self, config: Config) -> bool:
        return bool(config.section("scan")[self.scanner]["enabled"])

    def request(self, config: Config, ctx: StepContext | None) -> ScanRequest:
        return REQUEST_BUILDERS[self.scanner](config, ctx)

    def inputs(self, ctx: StepContext) -> StepInputs:
        req = self.request(ctx.config, ctx)
        scanner = SCANNERS[self.scanner]()
        try:
            version = scanner.tool_version()
        except ScanError:
            version = "missing"  # the run itself reports the failure
        return StepInputs(files=tuple(req.targets),
                          config={"scan": dict(ctx.config.section("scan")[self.scanner])},
                          tools={scanner.tool: version})

    def outputs(self, config: Config) -> tuple[str, ...]:
        return (scan_result_path(self.scanner),)

    def run(self, ctx: StepContext) -> StepOutcome:
        result = run_scan(self.scanner, self.request(ctx.config, ctx))
        atomic_write_json(ctx.output(scan_result_path(self.scanner)), result.to_json())
        status = StepStatus.ERROR if result.status is ScanStatus.ERROR else StepStatus.PASSED
        return StepOutcome(status, summarize(result), {"findings": len(result.findings)})


def make_scan_step(scanner: str, title: str, after: tuple[str, ...] = ()) -> type[ScanStep]:
    attrs = {"name": f"scan-{scanner}", "title": title, "scanner": scanner, "after": after}
    return type(f"Scan{scanner.title()}Step", (ScanStep,), attrs)


def load_scan_results(out_dir: Path, names: list[str]) -> dict[str, ScanResult]:
    import json

    results: dict[str, ScanResult] = {}
    for name in names:
        path = out_dir / scan_result_path(name)
        if path.is_file():
            results[name] = ScanResult.from_json(json.loads(path.read_text("utf-8")))
    return results
