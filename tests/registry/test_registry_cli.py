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


def index(project: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    """The registry's state as `ci-ml registry list --json` derives it from the events."""
    result = cli(project, "registry", "list", "--json", env=env)
    assert result.code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def events(project: Path) -> list[Path]:
    return sorted((project / ".ci-ml" / "registry" / "events").glob("*.dsse.json"))


def promote_out(project: Path, out: Path, *args: str) -> Any:
    return run_cli("promote", "--config", project / "ci-ml.yaml", "--out", out, *args,
                   cwd=project)


def test_promote_needs_a_gate_decision(project: Path) -> None:
    (project / "out" / "decision.json").unlink()
    result = cli(project, "promote", "--stage", "staging")
    assert result.code == 1
    assert result.stderr.startswith("error: promotion to staging refused: no gate decision")
    assert not (project / ".ci-ml" / "registry").exists()


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
    # Production also needs staging, which the registry's verified history says it lacks.
    assert "does not hold staging through a gated promotion" in entry["gate"]["problems"][1]
    history = cli(project, "registry", "history")
    assert "[FORCED, signed]: hotfix INC-42" in history.stdout


def test_rollback_walks_back_through_the_stage(project: Path, tmp_path: Path) -> None:
    assert cli(project, "promote", "--stage", "staging").code == 0
    two = variant(project / "out", tmp_path / "two", "2")
    three = variant(project / "out", tmp_path / "three", "3")
    for out in (two, three):
        assert promote_out(project, out, "--stage", "staging", "--force", "--reason",
                           "trial").code == 0
    first = cli(project, "rollback", "--stage", "staging", "--reason", "bad canary")
    assert first.code == 0, first.output
    assert first.stdout.startswith("rolled back staging: v3 -> v2; event #4 (signed); head ")
    assert cli(project, "rollback", "--stage", "staging").stdout.startswith(
        "rolled back staging: v2 -> v1; event #5")
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
    assert len(events(project)) == 20
    verified = cli(project, "verify", "--stage", "staging")
    assert verified.code == 0, verified.output
    assert "history of" in verified.stdout and "20 event(s)" in verified.stdout


def test_a_corrupt_event_fails_verification_and_blocks(project: Path) -> None:
    assert cli(project, "promote", "--stage", "staging").code == 0
    (event,) = events(project)
    event.chmod(0o644)
    event.write_text("{not json")
    listing = cli(project, "registry", "list")
    assert listing.code == 1
    assert "event #1" in listing.stderr and "not a ci-ml registry event" in listing.stderr
    assert len(listing.stderr.strip().splitlines()) == 1
    verified = cli(project, "verify")
    assert verified.code == 1 and "verification failed" in verified.stderr
    gate = cli(project, "gate", "--stage", "staging")
    assert gate.code == 1
    blocking = json.loads((project / "out" / "decision.json").read_text())["blocking"]
    assert "registry.history" in blocking


def test_registry_env_overrides_the_config(project: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "shared-registry"
    result = cli(project, "promote", "--stage", "staging", env={"CI_ML_REGISTRY": str(elsewhere)})
    assert result.code == 0, result.output
    assert (elsewhere / "events" / "000001.dsse.json").is_file()
    assert not (project / ".ci-ml").exists()


def test_promoting_unsigned_needs_an_explicit_opt_out(project: Path) -> None:
    edit_config(project, lambda d: d.__setitem__("registry", {}))
    refused = cli(project, "promote", "--stage", "staging")
    assert refused.code == 2
    assert refused.stderr.startswith("error: no signing key: promotions must be signed "
                                     "(registry.signing: required)")
    assert not (project / ".ci-ml" / "registry").exists()
    edit_config(project, lambda d: d.__setitem__("registry", {"signing": "off"}))
    assert cli(project, "gate", "--stage", "staging").code == 0
    promoted = cli(project, "promote", "--stage", "staging")
    assert promoted.code == 0, promoted.output
    assert "UNSIGNED: registry.signing is off" in promoted.stdout
    assert "warning: the promotion is UNSIGNED" in promoted.stderr
    assert json.loads((project / "out" / "promotion.json").read_text())["signing"] == "off"
    assert "[UNSIGNED]" in cli(project, "registry", "history").stdout
    # The gate's report and summary say so.
    assert cli(project, "gate", "--stage", "production").code == 0
    summary = (project / "out" / "summary.md").read_text()
    assert "**Registry signing is OFF**" in summary
    rules = {r["rule"]: r for r in
             json.loads((project / "out" / "decision.json").read_text())["rules"]}
    assert "promotions are UNSIGNED (1 unsigned event(s))" in rules["registry.history"]["message"]
    # Where the CI system hands over a key, the opt-out does not hold: the unsigned
    # history fails and blocks.
    pub = project / "keys" / "signing.pem.pub"
    gate = cli(project, "gate", "--stage", "production", env={"CI_ML_VERIFY_KEY": str(pub)})
    assert gate.code == 1
    assert "UNSIGNED, and signatures are required (the CI environment gives a key" in \
        rules_of(project)["registry.history"]["message"]


def rules_of(project: Path) -> dict[str, Any]:
    return {r["rule"]: r for r in
            json.loads((project / "out" / "decision.json").read_text())["rules"]}


def test_a_model_without_safetensors_weights_is_promoted(project: Path, tmp_path: Path) -> None:
    """A team's own training leaves only the ONNX model and its card."""
    own = variant(project / "out", tmp_path / "own", "own")
    (own / "model" / "model.safetensors").unlink()
    result = promote_out(project, own, "--stage", "staging", "--force", "--reason", "own")
    assert result.code == 0, result.output
    (version,) = index(project)["versions"]
    assert set(version["files"]) == {"model.onnx", "model.json"} | (
        {"model.onnx.data"} if (own / "candidate" / "model.onnx.data").exists() else set())
    assert cli(project, "verify").code == 0
