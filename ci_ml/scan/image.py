"""Container image scanning with trivy: a local docker image or a ``docker save`` archive.

Trivy always reports the image's secrets and misconfigurations (its files, and
its config/history as a Dockerfile) and writes a CycloneDX SBOM. Vulnerabilities:
- online (no advisory mirror configured): trivy's own DB (``--scanners vuln``);
- offline (``scan.deps.advisories`` / ``--advisories``): trivy cannot download its
  DB, so the SBOM's PyPI packages are matched against the offline OSV mirror;
  packages of other ecosystems (deb, apk...) are listed as not checked.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from packaging.utils import canonicalize_name

from ci_ml.fsutil import atomic_write_text
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
from ci_ml.scan.source_suppressions import mark_trivy_ignored, trivy_ignores
from ci_ml.scan.tool import DEFAULT_TIMEOUT_S
from ci_ml.scan.trivy import Where, report_findings, run_trivy, trivy_version

if TYPE_CHECKING:
    from ci_ml.advisories.store import AdvisoryDB


def _properties(component: Mapping[str, Any]) -> dict[str, str]:
    return {str(p.get("name")): str(p.get("value")) for p in component.get("properties") or ()
            if isinstance(p, Mapping)}


def sbom_packages(sbom: Mapping[str, Any]) -> list[dict[str, str | None]]:
    """Every package component of a trivy CycloneDX SBOM: purl type, name, version, file, layer."""
    if sbom.get("bomFormat") != "CycloneDX" or not isinstance(sbom.get("components", []), list):
        raise ScanError("trivy's SBOM is not a CycloneDX document; the scan did not run")
    out: list[dict[str, str | None]] = []
    for comp in sbom.get("components") or ():
        purl = str(comp.get("purl") or "")
        if not purl.startswith("pkg:"):
            continue
        props = _properties(comp)
        out.append({"type": purl[4:].split("/", 1)[0], "name": str(comp.get("name", "")),
                    "version": str(comp.get("version", "")), "purl": purl,
                    "path": props.get("aquasecurity:trivy:FilePath"),
                    "layer": props.get("aquasecurity:trivy:LayerDiffID")})
    return out


def offline_vulnerabilities(packages: list[dict[str, str | None]], db: AdvisoryDB, where: Where,
                            unscored: Severity) -> list[Finding]:
    """PyPI packages of the image matched against the offline mirror, as pip-audit would."""
    findings: list[Finding] = []
    for pkg in packages:
        if pkg["type"] != "pypi" or not pkg["name"] or not pkg["version"]:
            continue
        name, version = canonicalize_name(str(pkg["name"])), str(pkg["version"])
        for adv in db.query(name, version):
            if adv.withdrawn:
                continue  # pip-audit skips withdrawn records too
            severity, source = adv.severity(unscored)
            findings.append(Finding(
                id=adv.id, rule="vulnerable-package", scanner="image", severity=severity,
                confidence=Confidence.HIGH, title=f"{name} {version}: {adv.summary[:160]}",
                location=Location(path=pkg["path"], package=name, version=version,
                                  image=where.image, digest=where.digest, layer=pkg["layer"]),
                fix_version=adv.fix_for(name, version),
                references=(f"https://osv.dev/vulnerability/{adv.id}", *adv.references),
                aliases=adv.aliases,
                raw={"purl": pkg["purl"], "severity_source": source,
                     "cvss_score": adv.cvss_score, "description": adv.summary[:2000],
                     "advisory_source": "offline-mirror"},
            ))
    return findings


class ImageScanner(Scanner):
    name: ClassVar[str] = "image"
    tool: ClassVar[str] = "trivy"

    def tool_version(self) -> str:
        return trivy_version()

    def scan(self, request: ScanRequest) -> ScanResult:
        opts = request.options
        timeout = float(opts.get("timeout", DEFAULT_TIMEOUT_S))
        image, archive = opts.get("image"), opts.get("input")
        if bool(image) == bool(archive):
            raise ScanError("image: give exactly one of an image name or an image archive")
        if archive:
            if not Path(archive).is_file():
                raise ScanError(f"image: archive does not exist: {archive}")
            subject = ["--input", str(archive)]
        else:
            subject = [str(image)]
        advisories = opts.get("advisories")
        unscored = Severity.parse(opts.get("unscored_severity") or "medium")

        sbom = run_trivy(["image", *subject, "--format", "cyclonedx"], cwd=request.root,
                         timeout=timeout)
        packages = sbom_packages(sbom)
        scanners = "secret,misconfig" if advisories else "vuln,secret,misconfig"
        doc = run_trivy(["image", *subject, "--format", "json", "--scanners", scanners,
                         "--image-config-scanners", "misconfig,secret", "--skip-check-update"],
                        cwd=request.root, timeout=timeout)
        meta = doc.get("Metadata") or {}
        tags = meta.get("RepoTags") or []
        label = str(image) if image else (str(tags[0]) if tags else Path(str(archive)).name)
        where = Where(image=label, digest=meta.get("ImageID"),
                      artifact=str(doc.get("ArtifactName", "")))
        ignored, notes = trivy_ignores(request.root)
        findings = mark_trivy_ignored(report_findings(doc, self.name, where), ignored)
        if advisories:
            from ci_ml.advisories.store import AdvisoryDB

            db = AdvisoryDB(Path(advisories))
            findings += offline_vulnerabilities(packages, db, where, unscored)
            others = Counter(str(p["type"]) for p in packages if p["type"] != "pypi")
            if others:
                listed = ", ".join(f"{n} {t}" for t, n in sorted(others.items()))
                notes.append(f"{sum(others.values())} non-PyPI package(s) ({listed}) were not "
                             "checked for vulnerabilities: the offline mirror covers PyPI only")
        sbom_out = opts.get("sbom_out")
        if sbom_out:
            atomic_write_text(Path(sbom_out), json.dumps(sbom, indent=2) + "\n")
        return ScanResult(scanner=self.name, status=ScanStatus.OK, findings=tuple(findings),
                          tool=self.tool, tool_version=self.tool_version(),
                          targets=(label,), notes=tuple(notes))
