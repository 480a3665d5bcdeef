"""Code scanning with bandit: its JSON report, normalized.

bandit runs with ci-ml's settings and ``--ignore-nosec``: what the tree under review
asks bandit to hide (``# nosec``, a ``.bandit`` with ``skips:``) is reported on each
finding as ``suppressed_in_source`` and still counts; only a waiver suppresses. A file
bandit cannot parse is a finding naming it; the rest of the scan stands.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
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
    SourceSuppression,
)
from ci_ml.scan.source_suppressions import Nosec, TreeConfig, nosec_comments, nosec_for, tree_configs
from ci_ml.scan.tool import DEFAULT_TIMEOUT_S, find_tool, parse_json_output, run_tool, tool_version


def _relative(path: str, root: Path) -> str:
    try:
        return Path(path).resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return Path(path).as_posix()


# ci-ml's own bandit settings, passed explicitly so nothing in the scanned tree replaces
# them: an INI with an empty [bandit] section (given with --ini, bandit stops looking for
# .bandit files in the targets) and a YAML profile with every test and no skips.
BANDIT_INI = "[bandit]\n"
BANDIT_PROFILE = "# ci-ml: every bandit test, nothing skipped\nskips: []\n"
UNPARSABLE_ID, UNPARSABLE_RULE = "CIML-C001", "code-unparsable"


class BanditScanner(Scanner):
    name: ClassVar[str] = "code"
    tool: ClassVar[str] = "bandit"

    def tool_version(self) -> str:
        return tool_version("bandit", "bandit")

    def command(self, request: ScanRequest, settings_dir: Path) -> list[str]:
        ini, profile = settings_dir / "bandit.ini", settings_dir / "bandit.yaml"
        ini.write_text(BANDIT_INI, "utf-8")
        profile.write_text(BANDIT_PROFILE, "utf-8")
        # --ignore-nosec: a '# nosec' in the code under review is reported, not obeyed.
        cmd = [find_tool("bandit"), "-r", "-f", "json", "-q", "--ignore-nosec",
               "--ini", str(ini), "-c", str(profile),
               "--severity-level", "all", "--confidence-level", "all"]
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
        with tempfile.TemporaryDirectory(prefix="ci-ml-bandit-") as settings_dir:
            proc = run_tool(self.command(request, Path(settings_dir)), tool="bandit",
                            ok_codes=(0, 1), cwd=request.root, timeout=timeout)
        report = parse_json_output(proc.stdout, "bandit", proc.stderr)
        if not isinstance(report, dict) or not isinstance(report.get("results"), list):
            raise ScanError("bandit: JSON report has no 'results'; the scan did not run")
        configs = tree_configs(request.root, request.targets)
        sources: dict[str, dict[int, Nosec]] = {}
        findings = [self._suppressed(self._finding(r, request.root), r, request.root, configs,
                                     sources) for r in report["results"]]
        unparsable = Severity.parse(str(request.options.get("unparsable_severity") or "medium"))
        findings += [self._unparsable(e, request.root, unparsable)
                     for e in report.get("errors") or () if isinstance(e, dict)]
        notes = tuple(f"tree-local bandit config ignored (ci-ml runs its own settings): "
                      f"{c.describe()}" for c in configs)
        return ScanResult(
            scanner=self.name, status=ScanStatus.OK, findings=tuple(findings), tool=self.tool,
            tool_version=self.tool_version(),
            targets=tuple(_relative(str(t), request.root) for t in request.targets),
            notes=notes,
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

    def _suppressed(self, finding: Finding, r: dict[str, Any], root: Path,
                    configs: list[TreeConfig], sources: dict[str, dict[int, Nosec]]) -> Finding:
        """The finding, marked with what in the tree would have hidden it from plain bandit."""
        path = finding.location.path or ""
        if path not in sources:
            try:
                sources[path] = nosec_comments((root / path).read_bytes())
            except OSError:
                sources[path] = {}
        line_range = [int(n) for n in r.get("line_range") or () if isinstance(n, int)]
        nosec = nosec_for(sources[path], finding.location.line, line_range, finding.id,
                          finding.rule)
        if nosec is not None:
            return replace(finding, suppressed_in_source=SourceSuppression(
                origin=nosec.text, path=path, line=nosec.line))
        for config in configs:
            marked = config.suppression(finding)
            if marked is not None:
                return replace(finding, suppressed_in_source=marked)
        return finding

    def _unparsable(self, error: dict[str, Any], root: Path, severity: Severity) -> Finding:
        """A file bandit could not read or parse: the rest of the scan stands, and the file
        is a finding (it could hide anything), severity from scan.code.unparsable_severity."""
        path = _relative(str(error.get("filename") or "?"), root)
        reason = str(error.get("reason") or "unknown error")
        return Finding(
            id=UNPARSABLE_ID, rule=UNPARSABLE_RULE, scanner=self.name, severity=severity,
            confidence=Confidence.HIGH,
            title=f"bandit could not analyze {path}: {reason}; nothing in it was checked",
            location=Location(path=path), raw={"reason": reason, "code_hash": ""},
        )


def _code_hash(code: str) -> str:
    # The flagged statement's text without bandit's line-number prefixes: stable when lines shift.
    from ci_ml.fsutil import sha256_bytes

    lines = [ln.split(" ", 1)[1] if " " in ln else "" for ln in code.splitlines()]
    return sha256_bytes("\n".join(s.strip() for s in lines).encode())[:16]
