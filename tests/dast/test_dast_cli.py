"""`ci-ml scan dast` through the real CLI, on real files and loopback servers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import FIXTURES, run_cli
from tests.serve.factory import make_model

KEY = "s3cr3t-zap-key-for-tests"


def result_of(out: Path) -> dict[str, Any]:
    return json.loads((out / "scans" / "dast.json").read_text())


def test_weak_server_through_the_cli(example_project: Path, weak_server: str,
                                     tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = run_cli("scan", "dast", "--config", example_project / "ci-ml.yaml", "--out", out,
                  "--target", weak_server, "--timeout", "5")
    assert res.code == 0, res.stderr
    doc = result_of(out)
    assert doc["status"] == "ok" and doc["tool"] == "ci-ml-dast"
    ids = {f["id"] for f in doc["findings"]}
    assert {"10036", "90022", "190001"} <= ids
    crash = next(f for f in doc["findings"] if f["id"] == "190001")
    # What the GitLab DAST report needs travels with every finding.
    assert crash["location"]["url"] == weak_server + "/predict"
    assert crash["raw"]["method"] == "POST" and crash["aliases"] == ["CWE-248"]
    assert crash["raw"]["solution"] and crash["raw"]["evidence"] and crash["severity"] == "high"
    manifest = json.loads((out / "manifest.json").read_text())
    assert [s["name"] for s in manifest["steps"]] == ["scan-dast"]   # no training for a URL


def test_rules_file_through_the_cli(example_project: Path, weak_server: str,
                                    tmp_path: Path) -> None:
    rules = tmp_path / "rules.tsv"
    rules.write_text("10036\tIGNORE\t(banner)\n10037\tFAIL\t(X-Powered-By)\n"
                     "*\tOUTOFSCOPE\t.*/openapi\\.json$\n")
    out = tmp_path / "out"
    res = run_cli("scan", "dast", "--config", example_project / "ci-ml.yaml", "--out", out,
                  "--target", weak_server, "--rules", rules, "--no-active")
    assert res.code == 0, res.stderr
    findings = result_of(out)["findings"]
    assert not any(f["id"] == "10036" for f in findings)
    assert not any(f["location"]["url"].endswith("/openapi.json") for f in findings)
    assert {f["severity"] for f in findings if f["id"] == "10037"} == {"high"}
    assert not any(f["id"] in ("190001", "40008") for f in findings)   # --no-active


def test_self_served_model_is_clean(example_project: Path, tmp_path: Path) -> None:
    """No target: the model is served on a loopback port for the scan, findings at serve.port."""
    model = make_model(example_project / "exported")
    cfg = example_project / "ci-ml.yaml"
    cfg.write_text(cfg.read_text() + "\nserve:\n  model: exported/model.onnx\n  port: 9090\n")
    out = tmp_path / "out"
    res = run_cli("scan", "dast", "--config", cfg, "--out", out)
    assert res.code == 0, res.stderr
    doc = result_of(out)
    assert doc["targets"] == ["http://127.0.0.1:9090"]
    assert [f for f in doc["findings"] if f["severity"] in ("medium", "high", "critical")] == []
    assert model.is_file()


def test_zap_engine_through_the_cli_never_prints_the_key(example_project: Path, fake_zap: Any,
                                                         tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = run_cli("scan", "dast", "--config", example_project / "ci-ml.yaml", "--out", out,
                  "--target", "http://127.0.0.1:8000", "--zap-url", fake_zap.url,
                  "--zap-api-key-env", "MY_ZAP_KEY", env={"MY_ZAP_KEY": KEY})
    assert res.code == 0, res.stderr
    doc = result_of(out)
    assert doc["tool"] == "zap" and doc["tool_version"] == "ZAP 2.16.1"
    assert len(doc["findings"]) == 14
    assert set(fake_zap.keys_seen) == {KEY}
    everything = res.output + "".join(p.read_text() for p in out.rglob("*.json"))
    assert KEY not in everything


def test_zap_report_import(example_project: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = run_cli("scan", "dast", "--config", example_project / "ci-ml.yaml", "--out", out,
                  "--zap-report", FIXTURES / "recorded" / "zap" / "report_json.json")
    assert res.code == 0, res.stderr
    doc = result_of(out)
    assert doc["tool"] == "zap" and len(doc["findings"]) == 14


def test_wrong_zap_key_exits_3_and_records_a_failed_scan(example_project: Path, fake_zap: Any,
                                                        tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = run_cli("scan", "dast", "--config", example_project / "ci-ml.yaml", "--out", out,
                  "--target", "http://127.0.0.1:8000", "--zap-url", fake_zap.url,
                  env={"ZAP_API_KEY": "not-the-key-42"})
    assert res.code == 3
    assert "bad_api_key" in res.stderr and "not-the-key-42" not in res.output
    doc = result_of(out)
    assert doc["status"] == "error" and doc["findings"] == []


def test_unreachable_target_exits_3(example_project: Path, tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "out"
    res = run_cli("scan", "dast", "--config", example_project / "ci-ml.yaml", "--out", out,
                  "--target", f"http://127.0.0.1:{port}")
    assert res.code == 3 and "did not answer" in res.stderr
    assert result_of(out)["status"] == "error"


def test_no_model_and_no_target_exits_3(example_project: Path, tmp_path: Path) -> None:
    res = run_cli("scan", "dast", "--config", example_project / "ci-ml.yaml", "--out",
                  tmp_path / "out")
    assert res.code == 3 and "run `ci-ml prune` first, or pass --target" in res.stderr


@pytest.mark.parametrize("args, message", [
    (["--target", "ftp://x"], "--target 'ftp://x': expected an http:// or https:// URL"),
    (["--target", "http://127.0.0.1:1", "--zap-url", "nope"], "--zap-url 'nope'"),
    (["--target", "http://127.0.0.1:1", "--zap-api-key-env", "my-key=abc"],
     "expected the NAME of an environment variable"),
    (["--target", "http://127.0.0.1:1", "--rules", "missing.tsv"], "--rules missing.tsv"),
    (["--target", "http://127.0.0.1:1", "--rules", "bad.tsv"], "bad.tsv:1: level 'NOPE'"),
    (["--target", "http://127.0.0.1:1", "--timeout", "0"], "--timeout must be positive"),
    (["--zap-report", "missing.json"], "--zap-report missing.json: file not found"),
])
def test_bad_usage_exits_2_before_anything_runs(example_project: Path, args: list[str],
                                               message: str) -> None:
    (example_project / "bad.tsv").write_text("10021\tNOPE\t\n")
    res = run_cli("scan", "dast", "--config", "ci-ml.yaml", "--out", "out", *args,
                  cwd=example_project)
    assert res.code == 2
    assert res.stderr.strip().splitlines() == [f"error: {res.stderr.strip()[7:]}"]
    assert message in res.stderr
    assert not (example_project / "out").exists()          # nothing half-written
