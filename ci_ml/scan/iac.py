"""Infrastructure-as-code scanning with trivy: Dockerfiles and Kubernetes manifests
(trivy's embedded misconfiguration checks, the same as ``trivy config``) and
committed secrets (trivy's secret scanner), in one ``trivy fs`` run per path."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from ci_ml.fsutil import IGNORED_DIRS
from ci_ml.scan.interface import Finding, ScanError, Scanner, ScanRequest, ScanResult, ScanStatus
from ci_ml.scan.source_suppressions import mark_trivy_ignored, trivy_ignores
from ci_ml.scan.tool import DEFAULT_TIMEOUT_S
from ci_ml.scan.trivy import Where, report_findings, run_trivy, trivy_version


def _relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix() or "."
    except ValueError:
        return path.resolve().as_posix()


class IacScanner(Scanner):
    name: ClassVar[str] = "iac"
    tool: ClassVar[str] = "trivy"

    def tool_version(self) -> str:
        return trivy_version()

    def command(self, request: ScanRequest, target: Path) -> list[str]:
        scanners = "misconfig,secret" if request.options.get("secrets", True) else "misconfig"
        skips = [*sorted(IGNORED_DIRS), *request.options.get("exclude", ())]
        for skip in request.options.get("skip_paths", ()):   # the out dir, if it is inside
            resolved, base = Path(skip).resolve(), target.resolve()
            if resolved != base and resolved.is_relative_to(base):
                skips.append(resolved.relative_to(base).as_posix())
        cmd = ["fs", "--format", "json", "--scanners", scanners, "--skip-check-update"]
        for skip in skips:
            cmd += ["--skip-dirs", skip]
        return [*cmd, str(target)]

    def scan(self, request: ScanRequest) -> ScanResult:
        timeout = float(request.options.get("timeout", DEFAULT_TIMEOUT_S))
        findings: list[Finding] = []
        for target in request.targets:
            if not target.exists():
                raise ScanError(f"iac: path to scan does not exist: {target}")
            rel = _relative(target, request.root)
            doc = run_trivy(self.command(request, target), cwd=request.root, timeout=timeout)
            # trivy names a directory scan's files relative to it, and a file scan by its name.
            prefix = rel if target.is_dir() else _relative(target.parent, request.root)
            findings += report_findings(doc, self.name, Where(prefix=prefix))
        ignored, notes = trivy_ignores(request.root)
        return ScanResult(scanner=self.name, status=ScanStatus.OK,
                          findings=tuple(mark_trivy_ignored(findings, ignored)),
                          tool=self.tool, tool_version=self.tool_version(),
                          targets=tuple(_relative(t, request.root) for t in request.targets),
                          notes=tuple(notes))
