"""Normalizing trivy's JSON report, on recorded outputs of trivy 0.76."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ci_ml.scan.image import sbom_packages
from ci_ml.scan.interface import ScanError, Severity
from ci_ml.scan.trivy import Where, report_findings

RECORDED = Path(__file__).resolve().parents[2] / "fixtures" / "recorded" / "trivy"


def _load(name: str) -> dict:  # type: ignore[type-arg]
    return json.loads((RECORDED / name).read_text())


def test_image_report_secrets_and_config_misconfigurations() -> None:
    doc = _load("planted-image.json")
    where = Where(image="planted", digest=doc["Metadata"]["ImageID"],
                  artifact=doc["ArtifactName"])
    findings = {f.id: f for f in report_findings(doc, "image", where)}
    assert set(findings) == {"aws-access-key-id", "DS-0002", "DS-0026"}
    secret = findings["aws-access-key-id"]
    assert secret.severity is Severity.CRITICAL
    assert secret.location.path == "app/aws.env" and secret.location.line == 2
    assert secret.location.layer and secret.location.layer.startswith("sha256:")
    assert "AKIA" not in json.dumps(secret.to_json())          # trivy masked it; we keep it so
    root = findings["DS-0002"]
    assert root.severity is Severity.HIGH and root.location.path is None
    assert root.location.digest == doc["Metadata"]["ImageID"]


def test_online_vulnerabilities_keep_trivys_severity_and_fix() -> None:
    doc = _load("planted-image-online.json")
    findings = {f.id: f for f in report_findings(doc, "image", Where(image="planted"))}
    vuln = findings["CVE-2018-18074"]
    assert (vuln.severity, vuln.fix_version) == (Severity.HIGH, "2.20.0")
    assert (vuln.location.package, vuln.location.version) == ("requests", "2.19.0")
    assert vuln.aliases == ("CWE-522",)
    assert findings["CVE-2023-32681"].severity is Severity.MEDIUM


def test_sbom_lists_the_python_package_with_its_layer() -> None:
    (pkg,) = sbom_packages(_load("planted-image.cdx.json"))
    assert (pkg["type"], pkg["name"], pkg["version"]) == ("pypi", "requests", "2.19.0")
    assert pkg["path"] and pkg["path"].endswith("METADATA")
    assert pkg["layer"] and pkg["layer"].startswith("sha256:")


@pytest.mark.parametrize("doc", [{"SchemaVersion": 1, "Results": []},
                                 {"SchemaVersion": 2, "Results": "nope"}])
def test_unexpected_report_shapes_are_scan_errors(doc: dict) -> None:  # type: ignore[type-arg]
    with pytest.raises(ScanError, match="did not run"):
        report_findings(doc, "iac", Where())


def test_not_an_sbom_is_a_scan_error() -> None:
    with pytest.raises(ScanError):
        sbom_packages({"SchemaVersion": 2})
