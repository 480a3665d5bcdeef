"""Code scanning with bandit: its JSON report, normalized."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from ci_ml.scan.interface import (
    Confidence,
    Finding,
    Location,
    ScanError,
    Scanner,
    ScanRequest,
    ScanResult,
    ScanStatus,
    Severity,
)
from ci_ml.scan.tool import DEFAULT_TIMEOUT_S, find_tool, parse_json_output, run_tool, tool_version


def _relative(path: str, root: Path) -> str:
    try:
        return Path(path).resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return Path(path).as_posix()


class BanditScanner(Scanner):
    name: ClassVar[str] = "code"
    tool: ClassVar[str] = "bandit"

    def tool_version(self) -> str:
        return tool_version("bandit", "bandit")

    def command(self, request: ScanRequest) -> list[str]:
        cmd = [find_tool("bandit"), "-r", "-f", "json", "-q"]
        exclude = request.options.get("exclude") or []
        if exclude:
            cmd += ["-x", ",".join(str(request.root / e) for e in exclude)]
        return cmd + [str(t) for t in request.targets]

    def scan(self, request: ScanRequest) -> ScanResult:
        missing = [t for t in request.targets if not t.exists()]
        if missing:
            raise ScanError(f"bandit: path to scan does not exist: {missing[0]}")
        # bandit exits 1 when it found issues: that is a successful scan.
        timeout = float(request.options.get("timeout", DEFAULT_TIMEOUT_S))
        proc = run_tool(self.command(request), tool="bandit", ok_codes=(0, 1), cwd=request.root,
                        timeout=timeout)
        report = parse_json_output(proc.stdout, "bandit", proc.stderr)
        if not isinstance(report, dict) or not isinstance(report.get("results"), list):
            raise ScanError("bandit: JSON report has no 'results'; the scan did not run")
        errors = report.get("errors") or []
        if errors:
            first = errors[0]
            raise ScanError(f"bandit could not scan {first.get('filename')}: {first.get('reason')}")
        findings = tuple(self._finding(r, request.root) for r in report["results"])
        return ScanResult(
            scanner=self.name, status=ScanStatus.OK, findings=findings, tool=self.tool,
            tool_version=self.tool_version(),
            targets=tuple(_relative(str(t), request.root) for t in request.targets),
        )

    def _finding(self, r: dict[str, Any], root: Path) -> Finding:
        cwe = (r.get("issue_cwe") or {}).get("id")
        refs = tuple(x for x in (r.get("more_info"), (r.get("issue_cwe") or {}).get("link")) if x)
        return Finding(
            id=str(r["test_id"]),
            rule=str(r.get("test_name", r["test_id"])),
            scanner=self.name,
            severity=Severity.parse(r.get("issue_severity")),
            confidence=Confidence.parse(r.get("issue_confidence")),
            title=str(r.get("issue_text", "")),
            location=Location(path=_relative(str(r["filename"]), root),
                              line=int(r.get("line_number") or 0) or None),
            references=refs,
            aliases=(f"CWE-{cwe}",) if cwe else (),
            raw={"test_id": r["test_id"], "line_range": r.get("line_range"),
                 "col_offset": r.get("col_offset"), "code_hash": _code_hash(r.get("code", ""))},
        )


def _code_hash(code: str) -> str:
    # The flagged statement's text without bandit's line-number prefixes: stable when lines shift.
    from ci_ml.fsutil import sha256_bytes

    lines = [ln.split(" ", 1)[1] if " " in ln else "" for ln in code.splitlines()]
    return sha256_bytes("\n".join(s.strip() for s in lines).encode())[:16]
