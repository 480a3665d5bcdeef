"""`ci-ml init` on a real project layout: from zero to a first `ci-ml run`."""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
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
                           "task": "classification", "normalize": "standard"}
    run = run_cli("run", "--out", "out", cwd=root)
    assert run.code == 0, run.output
    assert (root / "out" / "decision.json").is_file()
    # Signing is on from the start: the first promotion is a signed event.
    promoted = run_cli("promote", "--stage", "staging", "--out", "out", cwd=root)
    assert promoted.code == 0, promoted.output
    assert "signed by sha256:" in promoted.stdout
    assert run_cli("verify", cwd=root).code == 0


def test_init_makes_a_key_pair_whose_private_half_git_ignores(tmp_path: Path) -> None:
    root = _project(tmp_path)
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    result = run_cli("init", str(root))
    assert result.code == 0, result.output
    assert "CI_ML_SIGNING_KEY" in result.stdout
    registry = yaml.safe_load((root / "ci-ml.yaml").read_text())["registry"]
    assert registry == {"signing": "required", "signing_key": ".ci-ml/keys/signing.pem",
                        "verify_key": ".ci-ml/keys/signing.pem.pub"}
    private, public = root / registry["signing_key"], root / registry["verify_key"]
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert public.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    ignored = subprocess.run(["git", "check-ignore", "-q", str(private)], cwd=root, check=False)
    assert ignored.returncode == 0
    for committed in (public, root / ".ci-ml" / "keys" / ".gitignore"):
        assert subprocess.run(["git", "check-ignore", "-q", str(committed)], cwd=root,
                              check=False).returncode == 1
    key = private.read_bytes()
    assert run_cli("init", str(root), "--force").code == 0
    assert private.read_bytes() == key          # a re-init keeps the key
    public.write_text(public.read_text().replace("A", "B", 1))
    mismatch = run_cli("init", str(root), "--force")
    assert mismatch.code == 2 and "not the public key of" in mismatch.stderr


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


def test_init_without_data_or_with_several_unpaired_files(tmp_path: Path) -> None:
    root = tmp_path / "empty"
    root.mkdir()
    result = run_cli("init", str(root))
    assert result.code == 2 and "or a single data file to split; found: none" in result.stderr
    for name in ("a.csv", "b.csv"):
        shutil.copy(EXAMPLE / "data" / "test.csv", root / name)
    result = run_cli("init", str(root))
    assert result.code == 2 and "found: a.csv, b.csv" in result.stderr
    assert not (root / "ci-ml.yaml").exists()


def test_init_splits_a_single_file_seeded_and_stratified(tmp_path: Path) -> None:
    root = tmp_path / "one"
    (root / "data").mkdir(parents=True)
    shutil.copy(EXAMPLE / "data" / "train.csv", root / "data" / "digits.csv")
    result = run_cli("init", str(root), "--test-size", "0.25", "--seed", "3")
    assert result.code == 0, result.output
    assert "split data/digits.csv: 1076 train and 361 test rows (seed 3" in result.stdout
    doc = yaml.safe_load((root / "ci-ml.yaml").read_text())
    assert doc["data"]["train"] == "data/digits.train.csv"
    assert doc["data"]["test"] == "data/digits.test.csv"
    source = (root / "data" / "digits.csv").read_text().splitlines()
    train = (root / "data" / "digits.train.csv").read_text().splitlines()
    test = (root / "data" / "digits.test.csv").read_text().splitlines()
    assert train[0] == test[0] == source[0]
    assert sorted(train[1:] + test[1:]) == sorted(source[1:])      # a partition, rows intact
    # Stratified: every class keeps its share within one row.
    def share(rows: list[str], label: str) -> float:
        return sum(r.endswith("," + label) for r in rows) / len(rows)
    for label in map(str, range(10)):
        assert abs(share(test[1:], label) * 361 - share(source[1:], label) * 361) <= 1.0
    # Seeded: the same seed gives the same split.
    again = tmp_path / "again"
    (again / "data").mkdir(parents=True)
    shutil.copy(EXAMPLE / "data" / "train.csv", again / "data" / "digits.csv")
    assert run_cli("init", str(again), "--test-size", "0.25", "--seed", "3").code == 0
    assert (again / "data" / "digits.test.csv").read_text() == "\n".join(test) + "\n"


def test_init_infers_regression_and_writes_its_policy(tmp_path: Path) -> None:
    root = _project(tmp_path)
    result = run_cli("init", str(root), "--target", "px36")   # a pixel as a quantity
    assert result.code == 0, result.output
    doc = yaml.safe_load((root / "ci-ml.yaml").read_text())
    assert doc["data"]["task"] == "classification"   # 17 integer levels: still classes
    text = (root / "ci-ml.yaml").read_text()
    for split in ("train", "test"):
        path = root / "data" / f"{split}.csv"
        lines = path.read_text().splitlines()
        # A continuous target: the pixel plus a fraction.
        path.write_text("\n".join([lines[0]] + [
            ",".join(c if i != 36 else f"{float(c) + 0.25 * (j % 3):.2f}"
                     for i, c in enumerate(line.split(","))) for j, line in
            enumerate(lines[1:])]) + "\n")
    result = run_cli("init", str(root), "--target", "px36", "--force")
    assert result.code == 0, result.output
    doc = yaml.safe_load((root / "ci-ml.yaml").read_text())
    assert doc["data"]["task"] == "regression"
    assert doc["policy"]["staging"]["metrics"] == {"r2": {"min": 0.5}}
    assert doc["policy"]["staging"]["regression"] == {"rmse": {"tolerance": 0.05,
                                                               "relative": True}}
    assert text != (root / "ci-ml.yaml").read_text()


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
