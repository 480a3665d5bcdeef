"""Dependency auditing with pip-audit, online or against the offline OSV mirror.

pip-audit runs as ``pip-audit -r FILE... --no-deps --disable-pip --format json``:
the pins are audited as written, with no virtualenv, no pip and no PyPI JSON
API (unreachable offline; the simple index alone cannot resolve). Offline,
ci-ml serves the advisory directory as an OSV API on loopback and adds
``--vulnerability-service osv --osv-url http://127.0.0.1:PORT/v1/query``.
Online (no mirror configured) pip-audit uses its default service.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

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
from ci_ml.scan.tool import (
    DEFAULT_TIMEOUT_S,
    find_tool,
    last_line,
    parse_json_output,
    run_tool,
    tool_version,
)

if TYPE_CHECKING:  # the OSV server and requirement parsing load only when deps are scanned
    from ci_ml.advisories.store import AdvisoryDB
    from ci_ml.scan.requirements import Pin

VULN_RULE = "vulnerable-dependency"
SKIP_ID, SKIP_RULE = "CIML-D001", "dependency-not-audited"


def _relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.resolve().as_posix()


def _lowest(versions: Sequence[str]) -> str | None:
    def key(v: str) -> tuple[int, Any]:
        try:
            return (0, Version(v))
        except InvalidVersion:
            return (1, v)
    return min(versions, key=key) if versions else None


class PipAuditScanner(Scanner):
    name: ClassVar[str] = "deps"
    tool: ClassVar[str] = "pip-audit"

    def tool_version(self) -> str:
        return tool_version("pip-audit", "pip-audit")

    def command(self, files: Sequence[Path], osv_url: str | None) -> list[str]:
        cmd = [find_tool("pip-audit")]
        for f in files:
            cmd += ["-r", str(f)]
        cmd += ["--no-deps", "--disable-pip", "--format", "json", "--progress-spinner", "off",
                "--desc", "on", "--aliases", "on"]
        if osv_url:
            cmd += ["--vulnerability-service", "osv", "--osv-url", osv_url]
        return cmd

    def scan(self, request: ScanRequest) -> ScanResult:
        from ci_ml.advisories.server import OSVServer
        from ci_ml.advisories.store import AdvisoryDB
        from ci_ml.scan.requirements import parse_requirements

        files = list(request.targets)
        pins: dict[str, Pin] = {}
        for f in files:
            for pin in parse_requirements(f):
                pins.setdefault(pin.name, pin)
        opts = request.options
        timeout = float(opts.get("timeout", DEFAULT_TIMEOUT_S))
        unscored = Severity.parse(opts.get("unscored_severity") or "medium")
        advisories = opts.get("advisories")
        # Loopback only: never send the project's pins through a proxy.
        env = {"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
        db: AdvisoryDB | None = None
        if advisories:
            db = AdvisoryDB(Path(advisories))
            with OSVServer(db) as server:
                proc = run_tool(self.command(files, server.query_url), tool="pip-audit",
                                ok_codes=(0, 1), cwd=request.root, timeout=timeout, env=env)
                if server.errors:
                    raise server.errors[0]
        else:
            proc = run_tool(self.command(files, None), tool="pip-audit", ok_codes=(0, 1),
                            cwd=request.root, timeout=timeout, env=env)
        if not proc.stdout.strip():
            raise ScanError(f"pip-audit failed with exit code {proc.returncode}: "
                            f"{last_line(proc.stderr)}; the scan did not run")
        report = parse_json_output(proc.stdout, "pip-audit", proc.stderr)
        deps = report.get("dependencies") if isinstance(report, dict) else None
        if not isinstance(deps, list):
            raise ScanError("pip-audit's JSON has no 'dependencies' list; the scan did not run")
        findings: list[Finding] = []
        for dep in deps:
            findings += self._findings(dep, pins, request.root, db, unscored)
        return ScanResult(scanner=self.name, status=ScanStatus.OK, findings=tuple(findings),
                          tool=self.tool, tool_version=self.tool_version(),
                          targets=tuple(_relative(f, request.root) for f in files))

    def _findings(self, dep: Mapping[str, Any], pins: Mapping[str, Pin], root: Path,
                  db: AdvisoryDB | None, unscored: Severity) -> list[Finding]:
        if not isinstance(dep, Mapping) or "name" not in dep:
            raise ScanError("pip-audit's JSON has a dependency without a name; "
                            "the scan did not run")
        name = canonicalize_name(str(dep["name"]))
        pin = pins.get(name)
        path = _relative(pin.file, root) if pin else None
        line = pin.line if pin else None
        version = str(dep.get("version") or (pin.version if pin else "")) or None
        if dep.get("skip_reason"):
            return [Finding(
                id=SKIP_ID, rule=SKIP_RULE, scanner=self.name, severity=Severity.INFO,
                confidence=Confidence.HIGH,
                title=f"{name} was not audited: {dep['skip_reason']}",
                location=Location(path=path, line=line, package=name, version=version),
                raw={"skip_reason": dep["skip_reason"]})]
        out = []
        for vuln in dep.get("vulns") or ():
            vid = str(vuln["id"])
            aliases = tuple(str(a) for a in vuln.get("aliases") or ())
            advisory = db.find(name, (vid, *aliases)) if db else None
            severity, source = advisory.severity(unscored) if advisory else (unscored, "default")
            refs = (f"https://osv.dev/vulnerability/{vid}",
                    *(advisory.references if advisory else ()))
            description = " ".join(str(vuln.get("description") or "").split())
            out.append(Finding(
                id=vid, rule=VULN_RULE, scanner=self.name, severity=severity,
                confidence=Confidence.HIGH,
                title=f"{name} {version}: {description[:160] or vid}",
                location=Location(path=path, line=line, package=name, version=version),
                fix_version=_lowest([str(v) for v in vuln.get("fix_versions") or ()]),
                references=refs, aliases=aliases,
                raw={"fix_versions": list(vuln.get("fix_versions") or ()),
                     "description": description[:2000], "severity_source": source,
                     "cvss_score": advisory.cvss_score if advisory else None,
                     "advisory_source": "offline-mirror" if db else "pip-audit"},
            ))
        return out
