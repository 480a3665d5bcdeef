"""`ci-ml init` on a real project layout: from zero to a first `ci-ml run`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from tests.conftest import EXAMPLE, FIXTURES, run_cli


def _project(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    (root / "data").mkdir(parents=True)
    for name in ("train.csv", "test.csv"):
        shutil.copy(EXAMPLE / "data" / name, root / "data" / name)
    shutil.copytree(EXAMPLE / "src", root / "src")
    return root


def test_init_writes_a_valid_commented_config_that_runs(tmp_path: Path) -> None:
    root = _project(tmp_path)
    result = run_cli("init", str(root))
    assert result.code == 0, result.output
    text = (root / "ci-ml.yaml").read_text()
    assert text.startswith("# ci-ml configuration")
    doc = yaml.safe_load(text)
    assert doc["data"] == {"train": "data/train.csv", "test": "data/test.csv", "target": "label",
                           "scale": 1.0, "normalize": "standard"}
    run = run_cli("run", "--out", "out", cwd=root)
    assert run.code == 0, run.output
    assert (root / "out" / "decision.json").is_file()


def test_init_refuses_to_overwrite(tmp_path: Path) -> None:
    root = _project(tmp_path)
    assert run_cli("init", str(root)).code == 0
    before = (root / "ci-ml.yaml").read_text()
    result = run_cli("init", str(root))
    assert result.code == 2
    assert "already exists" in result.stderr
    assert (root / "ci-ml.yaml").read_text() == before


def test_init_target_option_and_bad_target(tmp_path: Path) -> None:
    root = _project(tmp_path)
    result = run_cli("init", str(root), "--target", "nope")
    assert result.code == 2 and "no column 'nope'" in result.stderr
    assert not (root / "ci-ml.yaml").exists()
    assert run_cli("init", str(root), "--target", "px0").code == 0
    assert yaml.safe_load((root / "ci-ml.yaml").read_text())["data"]["target"] == "px0"


def test_init_without_a_train_test_pair(tmp_path: Path) -> None:
    root = tmp_path / "empty"
    root.mkdir()
    (root / "all.csv").write_text("a,b\n1,2\n")
    result = run_cli("init", str(root))
    assert result.code == 2
    assert "needs a training and a test CSV" in result.stderr


def _with_vulnerable_pin(tmp_path: Path) -> Path:
    root = _project(tmp_path)
    (root / "requirements.txt").write_text("requests==2.19.1\n")
    return root


def test_init_picks_the_bundled_mirror_when_the_osv_service_does_not_answer(
        tmp_path: Path) -> None:
    """This machine has no route to api.osv.dev: init says so and writes the offline mirror,
    so the dependency audit works here; the known advisory then blocks staging."""
    root = _with_vulnerable_pin(tmp_path)
    result = run_cli("init", str(root), env={"PIP_AUDIT_OSV_URL": "http://127.0.0.1:9/v1/query"})
    assert result.code == 0, result.output
    assert "dependency audit: the offline mirror bundled with ci-ml" in result.stdout
    assert "did not answer from here" in result.stdout
    deps = yaml.safe_load((root / "ci-ml.yaml").read_text())["scan"]["deps"]
    assert Path(root / deps["advisories"]).resolve() == (
        FIXTURES / "advisories" / "pypa-vulns").resolve()
    scan = run_cli("scan", "deps", "--config", root / "ci-ml.yaml", "--out", root / "out")
    assert scan.code == 0, scan.output
    found = json.loads((root / "out" / "scans" / "deps.json").read_text())
    assert found["status"] == "ok"
    assert "PYSEC-2018-28" in {f["id"] for f in found["findings"]}
    policy = yaml.safe_load((root / "ci-ml.yaml").read_text())["policy"]["staging"]
    assert policy["scanners"] == {"deps": {"medium": 0}}


def test_init_picks_the_osv_service_when_it_answers(tmp_path: Path) -> None:
    from ci_ml.advisories.server import OSVServer
    from ci_ml.advisories.store import AdvisoryDB

    root = _with_vulnerable_pin(tmp_path)
    with OSVServer(AdvisoryDB(FIXTURES / "advisories" / "pypa-vulns")) as server:
        result = run_cli("init", str(root), env={"PIP_AUDIT_OSV_URL": server.query_url})
        assert result.code == 0, result.output
        assert f"dependency audit: the OSV service at {server.query_url}" in result.stdout
        deps = yaml.safe_load((root / "ci-ml.yaml").read_text())["scan"]["deps"]
        assert deps["service"] == "osv" and deps["osv_url"] == server.query_url
        assert "advisories" not in deps
        # The real pip-audit queries that service (no mirror configured, no env override).
        scan = run_cli("scan", "deps", "--config", root / "ci-ml.yaml", "--out", root / "out")
        assert scan.code == 0, scan.output
        assert server.queries >= 1
    found = json.loads((root / "out" / "scans" / "deps.json").read_text())
    assert "PYSEC-2018-28" in {f["id"] for f in found["findings"]}
    assert {f["raw"]["advisory_source"] for f in found["findings"]} == {"pip-audit"}


def test_choose_source_says_when_nothing_answers(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from ci_ml.scan import advisory_source

    monkeypatch.delenv("CI_ML_ADVISORIES", raising=False)
    monkeypatch.setattr(advisory_source, "bundled_mirror", lambda: None)
    source = advisory_source.choose_source(tmp_path, probe=lambda url: False)
    assert source.kind == "none" and not source.reachable
    assert "will be incomplete" in source.description
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    monkeypatch.setenv("CI_ML_ADVISORIES", str(mirror))
    source = advisory_source.choose_source(tmp_path / "project", probe=lambda url: True)
    assert source.kind == "mirror" and source.advisories == "../mirror"
