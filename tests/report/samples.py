"""Scan results of every kind, built by hand, for the report writers' tests."""

from __future__ import annotations

import datetime as dt

from ci_ml.scan.interface import Confidence, Finding, Location, ScanResult, ScanStatus, Severity
from ci_ml.scan.waivers import Scope, Waiver, WaiverReport, apply_waivers

T0, T1 = "2025-06-01T10:00:00", "2025-06-01T10:00:05"


def _ok(scanner: str, tool: str, *findings: Finding, notes: tuple[str, ...] = ()) -> ScanResult:
    return ScanResult(scanner=scanner, status=ScanStatus.OK, findings=findings, tool=tool,
                      tool_version="1.0", targets=("src",), notes=notes, started_at=T0,
                      finished_at=T1)


BANDIT = Finding(id="B602", rule="subprocess_popen_with_shell_equals_true", scanner="code",
                 severity=Severity.HIGH, confidence=Confidence.HIGH,
                 title="subprocess call with shell=True identified",
                 location=Location(path="src/app/run.py", line=12),
                 references=("https://bandit.readthedocs.io/en/latest/plugins/b602.html",),
                 aliases=("CWE-78",), raw={"code_hash": "abc"})
DEP = Finding(id="PYSEC-2018-28", rule="vulnerable-dependency", scanner="deps",
              severity=Severity.MEDIUM, confidence=Confidence.HIGH,
              title="requests 2.19.0: sends Authorization on redirect",
              location=Location(path="requirements.txt", line=2, package="requests",
                                version="2.19.0"),
              fix_version="2.20.0", references=("https://osv.dev/vulnerability/PYSEC-2018-28",),
              aliases=("CVE-2018-18074", "GHSA-x84v-xcm2-53pg"),
              raw={"description": "The Requests package before 2.20.0 ...", "cvss_score": 7.5})
IMAGE_VULN = Finding(id="PYSEC-2023-74", rule="vulnerable-package", scanner="image",
                     severity=Severity.MEDIUM, title="requests 2.19.0: Proxy-Authorization leak",
                     location=Location(path="usr/lib/python3/site-packages/requests.dist-info",
                                       package="requests", version="2.19.0", image="app:1",
                                       layer="sha256:" + "1" * 64, digest="sha256:" + "2" * 64),
                     fix_version="2.31.0", aliases=("CVE-2023-32681",))
IMAGE_SECRET = Finding(id="aws-access-key-id", rule="AWS Access Key ID", scanner="image",
                       severity=Severity.CRITICAL, title="AWS Access Key ID in app/aws.env",
                       location=Location(path="app/aws.env", line=2, image="app:1",
                                         digest="sha256:" + "2" * 64),
                       raw={"match": "AWS_ACCESS_KEY_ID=********************"})
IMAGE_CONFIG = Finding(id="DS-0002", rule="Image user should not be 'root'", scanner="image",
                       severity=Severity.HIGH, title="Specify at least 1 USER command",
                       location=Location(image="app:1", digest="sha256:" + "2" * 64),
                       raw={"resolution": "Add 'USER <non root user name>' line"})
IAC = Finding(id="KSV-0017", rule="Privileged", scanner="iac", severity=Severity.HIGH,
              title="Container 'app' should set 'securityContext.privileged' to false",
              location=Location(path="deploy/my app.yaml", line=15),
              references=("https://avd.aquasec.com/misconfig/ksv017",))
MODEL = Finding(id="CIML-M002", rule="pickle-dangerous-import", scanner="model",
                severity=Severity.CRITICAL, title="models/evil.pkl imports os.system",
                location=Location(path="models/evil.pkl"),
                references=("https://docs.python.org/3/library/pickle.html",))
UNKNOWN = Finding(id="X-1", rule="x", scanner="code", severity=Severity.UNKNOWN, title="odd",
                  location=Location(path="src/app/x.py"))
DAST = Finding(id="10020", rule="Missing Anti-clickjacking Header", scanner="dast",
               severity=Severity.MEDIUM, title="X-Frame-Options header missing",
               location=Location(url="http://127.0.0.1:8080/predict?x=1"),
               raw={"method": "POST", "param": "x-frame-options"})


def all_scans() -> dict[str, ScanResult]:
    return {
        "code": _ok("code", "bandit", BANDIT, UNKNOWN),
        "deps": _ok("deps", "pip-audit", DEP),
        "image": _ok("image", "trivy", IMAGE_VULN, IMAGE_SECRET, IMAGE_CONFIG,
                     notes=("3 non-PyPI package(s) (3 deb) were not checked",)),
        "iac": _ok("iac", "trivy", IAC),
        "model": _ok("model", "ci-ml", MODEL),
        "dast": ScanResult(scanner="dast", status=ScanStatus.OK, findings=(DAST,), tool="zap",
                           tool_version="2.15", targets=("http://127.0.0.1:8080/predict",),
                           started_at=T0, finished_at=T1),
    }


def failed(scanner: str, tool: str) -> ScanResult:
    return ScanResult.failed(scanner, tool, f"{tool} is not installed; the scan did not run",
                             started_at=T0, finished_at=T1)


def waiver_report(scans: dict[str, ScanResult]) -> WaiverReport:
    waiver = Waiver("CVE-2018-18074", Scope("package", "requests"), "alice", "not reachable",
                    dt.date(2030, 1, 1))
    return apply_waivers([f for r in scans.values() for f in r.findings], [waiver],
                         dt.date(2025, 6, 1))
