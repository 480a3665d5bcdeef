"""Acceptance: the real CLI on the planted project finds every planted problem, and its
counts equal the raw tools' own counts on the same input."""

from __future__ import annotations

import json
import pickletools
import subprocess
import sys
from pathlib import Path

from ci_ml.advisories.server import OSVServer
from ci_ml.advisories.store import AdvisoryDB
from tests.conftest import run_cli
from tests.report.schema_check import assert_reports_valid
from tests.scan.conftest import FIXTURES, ids, scan_result

BIN = Path(sys.executable).parent


def _raw_json(cmd: list[str], cwd: Path, ok: tuple[int, ...] = (0,)) -> dict:  # type: ignore[type-arg]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    assert proc.returncode in ok, proc.stderr
    return json.loads(proc.stdout)


def test_code_finds_planted_bandit_issues_like_raw_bandit(planted: Path, tmp_path: Path) -> None:
    raw = _raw_json([str(BIN / "bandit"), "-r", "-f", "json", "-q", "src"], planted, ok=(1,))
    out = tmp_path / "out"
    result = run_cli("scan", "code", "--config", planted / "ci-ml.yaml", "--out", out)
    assert result.code == 0, result.output
    found = scan_result(out, "code")
    assert found["status"] == "ok"
    assert ids(found) == sorted(r["test_id"] for r in raw["results"])
    assert {"B105", "B307", "B506", "B602"} <= set(ids(found))
    by_id = {f["id"]: f for f in found["findings"]}
    assert by_id["B602"]["location"] == {"path": "src/planted_app/handlers.py", "line": 12}
    assert assert_reports_valid(out) == ["report.sarif", "gl-sast-report.json"]


def test_deps_finds_planted_advisories_like_raw_pip_audit(planted: Path, tmp_path: Path) -> None:
    with OSVServer(AdvisoryDB(FIXTURES / "advisories" / "pypa-vulns")) as server:
        raw = _raw_json([str(BIN / "pip-audit"), "-r", "requirements.txt", "--no-deps",
                         "--disable-pip", "-f", "json", "--progress-spinner", "off",
                         "-s", "osv", "--osv-url", server.query_url], planted, ok=(1,))
    raw_ids = sorted(v["id"] for d in raw["dependencies"] for v in d.get("vulns", []))
    out = tmp_path / "out"
    result = run_cli("scan", "deps", "--config", planted / "ci-ml.yaml", "--out", out)
    assert result.code == 0, result.output
    found = scan_result(out, "deps")
    assert ids(found) == raw_ids == ["PYSEC-2018-28", "PYSEC-2019-217", "PYSEC-2020-96",
                                     "PYSEC-2021-142", "PYSEC-2021-66", "PYSEC-2023-74"]
    requests = next(f for f in found["findings"] if f["id"] == "PYSEC-2018-28")
    assert requests["location"] == {"path": "requirements.txt", "line": 2,
                                    "package": "requests", "version": "2.19.0"}
    assert requests["fix_version"] == "2.20.0"
    assert "CVE-2018-18074" in requests["aliases"]
    assert assert_reports_valid(out) == ["report.sarif", "gl-dependency-scanning-report.json"]


def test_iac_finds_root_dockerfile_and_secret_like_raw_trivy(planted: Path,
                                                             tmp_path: Path) -> None:
    trivy = str(BIN / "trivy")
    common = ["--format", "json", "--skip-dirs", "image", "--cache-backend", "memory", "-q"]
    config = _raw_json([trivy, "config", "--skip-check-update", *common, "."], planted)
    secrets = _raw_json([trivy, "fs", "--scanners", "secret", *common, "."], planted)
    raw_misconfigs = sorted(m["ID"] for r in config.get("Results", [])
                            for m in r.get("Misconfigurations", []))
    raw_secrets = sorted(s["RuleID"] for r in secrets.get("Results", [])
                         for s in r.get("Secrets", []))
    out = tmp_path / "out"
    result = run_cli("scan", "iac", "--config", planted / "ci-ml.yaml", "--out", out)
    assert result.code == 0, result.output
    found = scan_result(out, "iac")
    assert ids(found) == sorted(raw_misconfigs + raw_secrets)
    by_id = {f["id"]: f for f in found["findings"]}
    assert by_id["DS-0002"]["location"]["path"] == "Dockerfile"          # runs as root
    assert by_id["KSV-0017"]["location"]["path"] == "deploy/deployment.yaml"
    assert by_id["aws-access-key-id"]["location"] == {"path": "config/aws.env", "line": 2}
    assert by_id["aws-access-key-id"]["severity"] == "critical"
    text = (out / "scans" / "iac.json").read_text() + (out / "report.sarif").read_text()
    assert "AKIACIMLPLANTEDFAKE0" not in text                            # never printed
    assert assert_reports_valid(out) == ["report.sarif", "gl-sast-report.json"]


def test_whole_pipeline_finds_the_pickle_and_the_gate_blocks(planted: Path,
                                                             tmp_path: Path) -> None:
    # pickletools' own disassembly of the planted file: the import that would run on load.
    listing = []
    pickletools.dis((planted / "models" / "malicious.pkl").read_bytes(), out=_Lines(listing))
    assert any("GLOBAL" in line and "'os system'" in line for line in listing)
    out = tmp_path / "out"
    result = run_cli("run", "--config", planted / "ci-ml.yaml", "--out", out)
    assert result.code == 1, result.output                               # the gate blocked
    assert "decision: BLOCK" in result.stdout
    model = scan_result(out, "model")
    assert [(f["id"], f["severity"], f["location"]["path"]) for f in model["findings"]] == [
        ("CIML-M001", "low", "models/malicious.pkl"),
        ("CIML-M002", "critical", "models/malicious.pkl")]
    assert "model" in model["targets"] and "candidate" in model["targets"]  # trained artifacts too
    decision = json.loads((out / "decision.json").read_text())
    assert "findings.critical" in decision["blocking"]
    for scanner in ("code", "deps", "iac", "model"):
        assert scan_result(out, scanner)["status"] == "ok"


class _Lines:
    def __init__(self, lines: list[str]) -> None:
        self.lines = lines

    def write(self, text: str) -> None:
        self.lines.extend(text.splitlines())
