"""The online modes that cannot run here (no pypi.org JSON API, no trivy DB download):
the real CLI with stand-ins for the tools that replay their recorded real output and log
the command line ci-ml gave them."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.conftest import run_cli
from tests.report.schema_check import assert_reports_valid
from tests.scan.conftest import FIXTURES, scan_result

RECORDED = FIXTURES / "recorded"


def _replayer(tmp_path: Path, name: str, outputs: dict[str, Path], code: int = 0) -> Path:
    """A stand-in tool: logs argv; prints the file whose key appears in argv (first match)."""
    log = tmp_path / f"{name}.log"
    script = tmp_path / "bin" / name
    script.parent.mkdir(exist_ok=True)
    script.write_text(
        f"#!{sys.executable}\nimport json, sys\n"
        f"if '--version' in sys.argv: print('Version: 0.76.0'); sys.exit(0)\n"
        f"open({str(log)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
        f"outputs = {json.dumps({k: str(v) for k, v in outputs.items()})}\n"
        "for key, path in outputs.items():\n"
        "    if key in sys.argv:\n"
        "        sys.stdout.write(open(path).read()); break\n"
        f"sys.exit({code})\n")
    script.chmod(0o755)
    return script


def _calls(tmp_path: Path, name: str) -> list[list[str]]:
    return [json.loads(line) for line in (tmp_path / f"{name}.log").read_text().splitlines()]


def _online(config: Path) -> None:
    text = config.read_text().replace("    advisories: ../advisories/pypa-vulns\n", "")
    config.write_text(text)


def test_deps_online_uses_pip_audits_default_service(planted: Path, tmp_path: Path) -> None:
    _online(planted / "ci-ml.yaml")
    tool = _replayer(tmp_path, "pip-audit", {"--format": RECORDED / "pip-audit" / "planted.json"},
                     code=1)
    out = tmp_path / "out"
    result = run_cli("scan", "deps", "--config", planted / "ci-ml.yaml", "--out", out,
                     env={"CI_ML_TOOL_PIP_AUDIT": str(tool)})
    assert result.code == 0, result.output
    (argv,) = _calls(tmp_path, "pip-audit")
    assert argv[:2] == ["-r", str((planted / "requirements.txt").resolve())]
    assert {"--no-deps", "--disable-pip", "--format", "json"} <= set(argv)
    # pip-audit's default service, named explicitly (scan.deps.service: pypi); no local URL.
    assert argv[argv.index("--vulnerability-service") + 1] == "pypi" and "--osv-url" not in argv
    found = scan_result(out, "deps")
    assert len(found["findings"]) == 6
    assert {f["raw"]["advisory_source"] for f in found["findings"]} == {"pip-audit"}
    assert {f["severity"] for f in found["findings"]} == {"medium"}       # scan.unscored_severity


def test_image_online_uses_trivys_vulnerability_db(planted: Path, tmp_path: Path) -> None:
    _online(planted / "ci-ml.yaml")
    trivy_dir = RECORDED / "trivy"
    tool = _replayer(tmp_path, "trivy", {"cyclonedx": trivy_dir / "planted-image.cdx.json",
                                         "json": trivy_dir / "planted-image-online.json"})
    archive = tmp_path / "planted.tar"
    archive.write_bytes(b"not read by the stand-in")
    out = tmp_path / "out"
    result = run_cli("scan", "image", "--config", planted / "ci-ml.yaml", "--out", out,
                     "--input", archive, env={"CI_ML_TOOL_TRIVY": str(tool)})
    assert result.code == 0, result.output
    sbom_call, json_call = _calls(tmp_path, "trivy")
    assert sbom_call[:3] == ["image", "--input", str(archive)]
    scanners = json_call[json_call.index("--scanners") + 1]
    assert scanners == "vuln,secret,misconfig" and "--skip-db-update" not in json_call
    found = {f["id"]: f for f in scan_result(out, "image")["findings"]}
    assert set(found) == {"CVE-2018-18074", "CVE-2023-32681", "aws-access-key-id", "DS-0002",
                          "DS-0026"}
    assert found["CVE-2018-18074"]["severity"] == "high"
    assert found["CVE-2018-18074"]["location"]["image"] == "ci-ml-test/planted:1"
    assert (out / "scans" / "image-sbom.cdx.json").is_file()
    assert_reports_valid(out)
    container = json.loads((out / "gl-container-scanning-report.json").read_text())
    assert sorted(v["identifiers"][0]["value"] for v in container["vulnerabilities"]) == [
        "CVE-2018-18074", "CVE-2023-32681"]
