"""Acceptance with a real Docker engine: the planted image, built from the planted
Dockerfile, scanned by name and as a `docker save` archive, offline."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ci_ml.advisories.server import OSVServer
from ci_ml.advisories.store import AdvisoryDB
from tests.conftest import run_cli
from tests.report.schema_check import assert_reports_valid
from tests.scan.conftest import FIXTURES, ids, scan_result

pytestmark = pytest.mark.docker
BIN = Path(sys.executable).parent


def _run(*cmd: str | Path, cwd: Path | None = None) -> str:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True,
                          check=False, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.fixture
def planted_image(docker_engine: None, planted: Path, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    tag = f"ci-ml-test/planted:{uuid.uuid4().hex[:12]}"
    _run("docker", "build", "--network", "host", "-q", "-t", tag, ".", cwd=planted)
    archive = tmp_path / "planted.tar"
    try:
        _run("docker", "save", "-o", archive, tag)
        yield tag, archive
    finally:
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True, check=False)


def test_archive_scan_finds_everything_like_raw_trivy_and_pip_audit(
        planted: Path, planted_image: tuple[str, Path], tmp_path: Path) -> None:
    _, archive = planted_image
    trivy = str(BIN / "trivy")
    raw = json.loads(_run(trivy, "image", "--input", archive, "--format", "json", "-q",
                          "--scanners", "secret,misconfig", "--image-config-scanners",
                          "misconfig,secret", "--skip-check-update", "--cache-backend", "memory"))
    raw_ids = [m["ID"] for r in raw.get("Results", []) for m in r.get("Misconfigurations", [])]
    raw_ids += [s["RuleID"] for r in raw.get("Results", []) for s in r.get("Secrets", [])]
    sbom = json.loads(_run(trivy, "image", "--input", archive, "--format", "cyclonedx", "-q",
                           "--cache-backend", "memory"))
    pins = [f"{c['name']}=={c['version']}" for c in sbom["components"]
            if c.get("purl", "").startswith("pkg:pypi/")]
    (tmp_path / "image-reqs.txt").write_text("\n".join(pins) + "\n")
    with OSVServer(AdvisoryDB(FIXTURES / "advisories" / "pypa-vulns")) as server:
        proc = subprocess.run([str(BIN / "pip-audit"), "-r", "image-reqs.txt", "--no-deps",
                               "--disable-pip", "-f", "json", "-s", "osv", "--osv-url",
                               server.query_url], cwd=tmp_path, capture_output=True, text=True,
                              check=False)
    raw_ids += [v["id"] for d in json.loads(proc.stdout)["dependencies"] for v in d["vulns"]]

    out = tmp_path / "out"
    result = run_cli("scan", "image", "--config", planted / "ci-ml.yaml", "--out", out,
                     "--input", archive)
    assert result.code == 0, result.output
    found = scan_result(out, "image")
    assert ids(found) == sorted(raw_ids)
    assert {"PYSEC-2018-28", "PYSEC-2023-74", "aws-access-key-id", "DS-0002"} <= set(ids(found))
    by_id = {f["id"]: f for f in found["findings"]}
    assert by_id["PYSEC-2018-28"]["location"]["layer"].startswith("sha256:")
    assert by_id["aws-access-key-id"]["location"]["path"] == "app/aws.env"
    assert found["notes"] == []                      # a scratch image has no OS packages
    assert (out / "scans" / "image-sbom.cdx.json").is_file()
    assert assert_reports_valid(out) == ["report.sarif", "gl-sast-report.json",
                                         "gl-container-scanning-report.json"]


def test_local_image_by_name_and_a_digest_scoped_waiver(
        planted: Path, planted_image: tuple[str, Path], tmp_path: Path) -> None:
    tag, _ = planted_image
    image_id = _run("docker", "image", "inspect", "--format", "{{.Id}}", tag).strip()
    out = tmp_path / "out"
    result = run_cli("scan", "image", "--config", planted / "ci-ml.yaml", "--out", out,
                     "--image", tag, "--fail-on", "critical")
    assert result.code == 1, result.output          # the committed secret is critical
    found = scan_result(out, "image")
    assert {f["location"]["digest"] for f in found["findings"]} == {image_id}
    (planted / "waivers.yaml").write_text(
        "waivers:\n  - id: aws-access-key-id\n"
        f"    image: {image_id}\n    owner: sec@example.com\n"
        "    reason: revoked key, image rebuilt next sprint\n    expires: 2999-01-01\n")
    waived = run_cli("scan", "image", "--config", planted / "ci-ml.yaml", "--out", out,
                     "--image", tag, "--fail-on", "critical", "--waivers",
                     planted / "waivers.yaml")
    assert waived.code == 0, waived.output
    assert "1 from cache" in waived.stdout               # same image ID: the scan is reused
