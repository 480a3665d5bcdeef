"""`ci-ml promote | rollback | registry` through the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from ci_ml.model.steps import served_metrics_path
from tests.conftest import REPO, run_cli
from tests.gate.trained import cli, edit_config, variant


def index(project: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        (project / ".ci-ml" / "registry" / "index.json").read_text())
    return data


def promote_out(project: Path, out: Path, *args: str) -> Any:
    return run_cli("promote", "--config", project / "ci-ml.yaml", "--out", out, *args,
                   cwd=project)


def test_promote_needs_a_gate_decision(project: Path) -> None:
    (project / "out" / "decision.json").unlink()
    result = cli(project, "promote", "--stage", "staging")
    assert result.code == 1
    assert result.stderr.startswith("error: promotion to staging refused: no gate decision")
    assert not (project / ".ci-ml" / "registry" / "index.json").exists()


def test_promote_refuses_a_blocked_decision(project: Path) -> None:
    edit_config(project, lambda d: d["policy"]["staging"].__setitem__(
        "metrics", {"accuracy": {"min": 0.999}}))
    assert cli(project, "gate", "--stage", "staging").code == 1
    result = cli(project, "promote", "--stage", "staging")
    assert result.code == 1
    assert "the gate blocked (blocking: metric.accuracy)" in result.stderr


def test_promote_refuses_a_decision_for_another_model(project: Path, tmp_path: Path) -> None:
    other = variant(project / "out", tmp_path / "other", "b")
    result = promote_out(project, other, "--stage", "staging")
    assert result.code == 1 and "re-run the gate" in result.stderr


def test_promote_refuses_when_the_policy_changed(project: Path) -> None:
    edit_config(project, lambda d: d["policy"]["staging"].__setitem__(
        "findings", {"critical": 0}))
    result = cli(project, "promote", "--stage", "staging")
    assert result.code == 1 and "the policy changed since the gate ran" in result.stderr


def test_force_needs_a_reason(project: Path) -> None:
    result = cli(project, "promote", "--stage", "staging", "--force")
    assert result.code == 2
    assert result.stderr.strip() == ("error: --force needs --reason TEXT: a forced promotion "
                                     "is recorded with why")


def test_promote_without_model_files_is_bad_input(project: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = promote_out(project, empty, "--stage", "staging", "--force", "--reason", "x")
    assert result.code == 2
    assert result.stderr.startswith("error: ") and "model file not found" in result.stderr


def test_promote_records_version_history_and_files(project: Path) -> None:
    result = cli(project, "promote", "--stage", "staging")
    assert result.code == 0, result.output
    assert result.stdout.startswith("promoted v1 (")
    promotion = json.loads((project / "out" / "promotion.json").read_text())
    decision = json.loads((project / "out" / "decision.json").read_text())
    assert promotion["digest"] == decision["model"]["digest"]
    idx = index(project)
    (version,) = idx["versions"]
    assert version["metrics"]["accuracy"] == json.loads(
        served_metrics_path(project / "out").read_text())["accuracy"]
    data = json.loads((project / "out" / "data-report.json").read_text())["sha256"]
    assert version["data"] == data
    blobs = project / ".ci-ml" / "registry" / "blobs" / "sha256"
    assert {"model.onnx", "model.safetensors", "model.json"} <= set(version["files"])
    for sha in version["files"].values():
        assert (blobs / sha).is_file()
    (entry,) = idx["history"]
    assert entry["forced"] is False and entry["gate"]["decision"] == "pass"
    assert set(entry["evidence"]) >= {"decision.json", "findings.json", "metrics.json"}
    listing = cli(project, "registry", "list")
    assert listing.code == 0 and "v1" in listing.stdout and "staging" in listing.stdout


def test_forced_promotion_is_recorded_with_its_reason(project: Path) -> None:
    (project / "out" / "decision.json").unlink()
    result = cli(project, "promote", "--stage", "production", "--force", "--reason",
                 "hotfix INC-42")
    assert result.code == 0, result.output
    (entry,) = index(project)["history"]
    assert entry["forced"] is True and entry["reason"] == "hotfix INC-42"
    assert entry["gate"]["problems"][0].startswith("no gate decision")
    history = cli(project, "registry", "history")
    assert "[FORCED, unsigned]: hotfix INC-42" in history.stdout


def test_rollback_walks_back_through_the_stage(project: Path, tmp_path: Path) -> None:
    assert cli(project, "promote", "--stage", "staging").code == 0
    two = variant(project / "out", tmp_path / "two", "2")
    three = variant(project / "out", tmp_path / "three", "3")
    for out in (two, three):
        assert promote_out(project, out, "--stage", "staging", "--force", "--reason",
                           "trial").code == 0
    first = cli(project, "rollback", "--stage", "staging", "--reason", "bad canary")
    assert first.code == 0 and first.stdout.strip() == "rolled back staging: v3 -> v2"
    assert cli(project, "rollback", "--stage", "staging").stdout.strip() == \
        "rolled back staging: v2 -> v1"
    last = cli(project, "rollback", "--stage", "staging")
    assert last.code == 2
    assert last.stderr.startswith("error: nothing to roll back to")
    empty = cli(project, "rollback", "--stage", "production")
    assert empty.code == 2 and "no model in production" in empty.stderr
    history = index(project)["history"]
    assert [(e["action"], e["version"]) for e in history] == [
        ("promote", 1), ("promote", 2), ("promote", 3), ("rollback", 2), ("rollback", 1)]
    assert history[3]["reason"] == "bad canary"


def test_a_promotion_of_a_known_model_reuses_its_version(project: Path) -> None:
    assert cli(project, "promote", "--stage", "staging").code == 0
    assert cli(project, "gate", "--stage", "production").code == 0
    assert cli(project, "promote", "--stage", "production").code == 0
    idx = index(project)
    assert len(idx["versions"]) == 1
    assert [(e["stage"], e["version"]) for e in idx["history"]] == [
        ("staging", 1), ("production", 1)]


def test_twenty_concurrent_promotions(project: Path, tmp_path: Path) -> None:
    outs = [variant(project / "out", tmp_path / f"out{i}", str(i)) for i in range(20)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "CI": "true"}
    procs = [subprocess.Popen(
        [sys.executable, "-m", "ci_ml", "promote", "--stage", "staging", "--force",
         "--reason", f"load {i}", "--config", str(project / "ci-ml.yaml"), "--out", str(out)],
        cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i, out in enumerate(outs)]
    results = [(p.wait(timeout=600), p.stdout.read() if p.stdout else "",
                p.stderr.read() if p.stderr else "") for p in procs]
    for p in procs:
        for stream in (p.stdout, p.stderr):
            if stream:
                stream.close()
    assert all(code == 0 for code, _, _ in results), results
    idx = index(project)
    history = idx["history"]
    assert len(idx["versions"]) == 20 and len(history) == 20
    assert [e["seq"] for e in history] == list(range(1, 21))
    assert sorted(e["version"] for e in history) == list(range(1, 21))
    assert {e["reason"] for e in history} == {f"load {i}" for i in range(20)}
    # No lost update: each promotion saw the one before it as the stage's current version.
    assert history[0]["previous"] is None
    for before, after in zip(history, history[1:], strict=False):
        assert after["previous"] == before["version"]
    registry = project / ".ci-ml" / "registry"
    assert not [p for p in registry.rglob("*.tmp")]
    assert len(list((registry / "attestations").iterdir())) == 20
    verified = cli(project, "verify", "--stage", "staging")
    assert verified.code == 0, verified.output


def test_corrupt_index_is_reported(project: Path) -> None:
    assert cli(project, "promote", "--stage", "staging").code == 0
    (project / ".ci-ml" / "registry" / "index.json").write_text("{not json")
    listing = cli(project, "registry", "list")
    assert listing.code == 2
    assert "registry index is corrupt" in listing.stderr
    assert len(listing.stderr.strip().splitlines()) == 1
    verified = cli(project, "verify")
    assert verified.code == 1 and "verification failed" in verified.stderr
    assert cli(project, "gate", "--stage", "staging").code == 2


def test_registry_env_overrides_the_config(project: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "shared-registry"
    result = cli(project, "promote", "--stage", "staging", env={"CI_ML_REGISTRY": str(elsewhere)})
    assert result.code == 0, result.output
    assert (elsewhere / "index.json").is_file()
    assert not (project / ".ci-ml").exists()
