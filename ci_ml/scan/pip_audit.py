"""Dependency auditing with pip-audit, online or against the offline OSV mirror.

pip-audit runs as ``pip-audit -r FILE... --no-deps --disable-pip --format json``:
the pins are audited as written, with no virtualenv, no pip and no PyPI JSON
API (unreachable offline; the simple index alone cannot resolve). Unpinned
requirements are first resolved with pip (``resolve.py``) and the resolved pins
audited. Offline, ci-ml serves the advisory directory as an OSV API on loopback
and adds ``--vulnerability-service osv --osv-url http://127.0.0.1:PORT/v1/query``.
Online (no mirror configured) pip-audit uses ``scan.deps.service`` (osv or pypi).

A dependency pip-audit could not audit (the service did not answer for it, a URL
requirement, an unpinned one pip could not resolve) is a *gap*: the scan's status
is ``incomplete`` and the gate blocks on it unless a waiver accepts that gap.
"""

from __future__ import annotations

import tempfile
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
UNRESOLVED_ID, UNRESOLVED_RULE = "CIML-D002", "dependency-unresolved"


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

    def command(self, files: Sequence[Path], osv_url: str | None,
                service: str | None = None) -> list[str]:
        cmd = [find_tool("pip-audit")]
        for f in files:
            cmd += ["-r", str(f)]
        cmd += ["--no-deps", "--disable-pip", "--format", "json", "--progress-spinner", "off",
                "--desc", "on", "--aliases", "on"]
        if osv_url:
            cmd += ["--vulnerability-service", "osv", "--osv-url", osv_url]
        elif service:
            cmd += ["--vulnerability-service", service]
        return cmd

    def scan(self, request: ScanRequest) -> ScanResult:
        from ci_ml.advisories.store import AdvisoryDB
        from ci_ml.scan.requirements import parse_requirements

        files = list(request.targets)
        all_pins = [pin for f in files for pin in parse_requirements(f)]
        pins: dict[str, Pin] = {}
        for pin in all_pins:
            pins.setdefault(pin.name, pin)
        opts = request.options
        timeout = float(opts.get("timeout", DEFAULT_TIMEOUT_S))
        unscored = Severity.parse(opts.get("unscored_severity") or "medium")
        gaps: list[Finding] = []
        notes: list[str] = []
        db = AdvisoryDB(Path(opts["advisories"])) if opts.get("advisories") else None
        with tempfile.TemporaryDirectory(prefix="ci-ml-deps-") as tmp:
            audited = files
            if any(not p.pinned for p in all_pins):
                audited, resolved_gaps, note = self._resolved_file(all_pins, Path(tmp), timeout,
                                                                   request.root)
                gaps += resolved_gaps
                notes.append(note)
            report = self._audit(audited, request, timeout, db)
        deps = report.get("dependencies") if isinstance(report, dict) else None
        if not isinstance(deps, list):
            raise ScanError("pip-audit's JSON has no 'dependencies' list; the scan did not run")
        findings: list[Finding] = []
        origin = next((p for p in all_pins if not p.pinned), None)
        for dep in deps:
            found, gap = self._findings(dep, pins, request.root, db, unscored, origin)
            findings += found
            gaps += gap
        skipped = [g for g in gaps if g.id == SKIP_ID]
        if deps and len(skipped) == len(deps):
            service = "the offline mirror" if db else (
                f"{opts.get('service') or 'pypi'} (pip-audit's online service)")
            notes.append(f"the advisory source ({service}) answered for none of the {len(deps)} "
                         "dependencies: is it reachable from here? Configure scan.deps.advisories "
                         "(an offline OSV mirror) where there is no network")
        return ScanResult(scanner=self.name,
                          status=ScanStatus.INCOMPLETE if gaps else ScanStatus.OK,
                          findings=tuple(findings), tool=self.tool,
                          tool_version=self.tool_version(),
                          targets=tuple(_relative(f, request.root) for f in files),
                          notes=tuple(notes), gaps=tuple(gaps))

    def _audit(self, files: Sequence[Path], request: ScanRequest, timeout: float,
               db: AdvisoryDB | None) -> Any:
        from ci_ml.advisories.server import OSVServer

        # Loopback only: never send the project's pins through a proxy.
        env = {"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
        service = request.options.get("service")
        osv_url = request.options.get("osv_url") if service == "osv" else None
        if db is not None:
            with OSVServer(db) as server:
                proc = run_tool(self.command(files, server.query_url), tool="pip-audit",
                                ok_codes=(0, 1), cwd=request.root, timeout=timeout, env=env)
                if server.errors:
                    raise server.errors[0]
        else:
            proc = run_tool(self.command(files, osv_url, service), tool="pip-audit",
                            ok_codes=(0, 1), cwd=request.root, timeout=timeout, env=env)
        if not proc.stdout.strip():
            raise ScanError(f"pip-audit failed with exit code {proc.returncode}: "
                            f"{last_line(proc.stderr)}; the scan did not run")
        return parse_json_output(proc.stdout, "pip-audit", proc.stderr)

    def _resolved_file(self, pins: Sequence[Pin], tmp: Path, timeout: float,
                       root: Path) -> tuple[list[Path], list[Finding], str]:
        """A pinned requirements file for pip-audit: the unpinned requirements resolved the
        way pip would install them here (and what they pull in), or, when resolution fails,
        the pins as written and one gap per unpinned requirement."""
        from ci_ml.scan.resolve import resolve

        resolution = resolve(pins, timeout)
        unpinned = [p for p in pins if not p.pinned]
        lines = [f"{p.spec}\n" for p in pins if p.url]
        gaps: list[Finding] = []
        if resolution.error is None:
            lines += [f"{n}=={v}\n" for n, v in sorted(resolution.versions.items())]
            picked = ", ".join(f"{p.name} {p.spec.removeprefix(p.name).strip() or '(any)'} "
                               f"-> {resolution.versions.get(p.name, '?')}" for p in unpinned)
            extra = len(set(resolution.versions) - resolution.requested)
            note = (f"{len(unpinned)} unpinned requirement(s) resolved with pip as it would "
                    f"install them here: {picked}; {extra} package(s) they and the pins pull "
                    "in are audited too (pin them to audit exactly what you ship)")
        else:
            lines += [f"{p.name}=={p.version}\n" for p in pins if p.version]
            gaps = [Finding(
                id=UNRESOLVED_ID, rule=UNRESOLVED_RULE, scanner=self.name,
                severity=Severity.UNKNOWN, confidence=Confidence.HIGH,
                title=f"{p.name} ({p.where(root)}: {p.spec!r}) is not pinned and pip could not "
                      f"resolve it here: {resolution.error}",
                location=Location(path=_relative(p.file, root), line=p.line, package=p.name),
                raw={"requirement": p.spec, "reason": resolution.error}) for p in unpinned]
            note = (f"{len(unpinned)} unpinned requirement(s) could not be resolved, so they "
                    f"were not audited: {resolution.error}")
        resolved = tmp / "requirements-resolved.txt"
        resolved.write_text("".join(dict.fromkeys(lines)), "utf-8")
        return [resolved], gaps, note

    def _findings(self, dep: Mapping[str, Any], pins: Mapping[str, Pin], root: Path,
                  db: AdvisoryDB | None, unscored: Severity,
                  origin: Pin | None) -> tuple[list[Finding], list[Finding]]:
        """(vulnerabilities, gap): a dependency pip-audit could not audit is a gap that makes
        the scan incomplete, never an info finding on a clean scan."""
        if not isinstance(dep, Mapping) or "name" not in dep:
            raise ScanError("pip-audit's JSON has a dependency without a name; "
                            "the scan did not run")
        name = canonicalize_name(str(dep["name"]))
        pin = pins.get(name) or origin   # a resolved dependency: the file that asked for it
        path = _relative(pin.file, root) if pin else None
        line = pin.line if pin and pin.name == name else None
        given = pin.version if pin and pin.name == name else ""
        version = str(dep.get("version") or given) or None
        if dep.get("skip_reason"):
            return [], [Finding(
                id=SKIP_ID, rule=SKIP_RULE, scanner=self.name, severity=Severity.UNKNOWN,
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
                     "advisory_source": "offline-mirror" if db else "pip-audit",
                     # Not in the files: pip resolved it for an unpinned requirement.
                     "resolved_dependency": name not in pins},
            ))
        return out, []
