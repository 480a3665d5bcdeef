"""Signed registry events and `ci-ml verify` through the real CLI, tried as an attacker who
can edit the registry directory and the repository, but not the CI system's secrets."""

from __future__ import annotations

import base64
import hashlib
import json
import stat
import subprocess
from pathlib import Path
from typing import Any

from ci_ml.model.steps import served_metrics_path
from tests.gate.trained import cli, edit_config
from tests.registry.conformance import forged_rollback, new_key, resign

REGISTRY = Path(".ci-ml") / "registry"


def keygen(project: Path, name: str) -> tuple[Path, Path, str]:
    key = project / "keys" / name
    result = cli(project, "registry", "keygen", key)
    assert result.code == 0, result.output
    keyid = result.stdout.strip().rsplit("key id ", 1)[1]
    return key, key.with_name(name + ".pub"), keyid


def project_key(project: Path) -> tuple[Path, Path]:
    """The trained project's key pair (made the way `ci-ml init` makes it)."""
    return project / "keys" / "signing.pem", project / "keys" / "signing.pem.pub"


def events(project: Path) -> list[Path]:
    return sorted((project / REGISTRY / "events").glob("*.dsse.json"))


def statement(path: Path) -> dict[str, Any]:
    env = json.loads(path.read_text())
    data: dict[str, Any] = json.loads(base64.b64decode(env["payload"]))
    return data


def overwrite(path: Path, data: bytes) -> None:
    path.chmod(0o644)
    path.write_bytes(data)


def rules(project: Path) -> dict[str, Any]:
    return {r["rule"]: r for r in
            json.loads((project / "out" / "decision.json").read_text())["rules"]}


def test_keygen_writes_a_private_key_only_its_owner_reads(project: Path) -> None:
    key, pub, keyid = keygen(project, "another.pem")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert pub.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    assert keyid.startswith("sha256:")
    again = cli(project, "registry", "keygen", key)
    assert again.code == 2 and "refusing to overwrite" in again.stderr


def test_statement_signs_every_field_the_gate_relies_on(project: Path) -> None:
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    subprocess.run(["git", "-c", "user.email=t@e", "-c", "user.name=t", "add", "ci-ml.yaml"],
                   cwd=project, check=True)
    subprocess.run(["git", "-c", "user.email=t@e", "-c", "user.name=t", "commit", "-qm", "x"],
                   cwd=project, check=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project, check=True,
                            capture_output=True, text=True).stdout.strip()
    edit_config(project, lambda d: d["registry"].__setitem__("lock_timeout_s", 30))
    result = cli(project, "promote", "--stage", "staging")
    assert result.code == 0, result.output
    (event,) = events(project)
    st = statement(event)
    out = project / "out"
    assert st["_type"] == "https://in-toto.io/Statement/v1"
    subjects = {s["name"]: s["digest"]["sha256"] for s in st["subject"]}
    assert subjects["model.onnx"] == hashlib.sha256(
        (out / "candidate" / "model.onnx").read_bytes()).hexdigest()
    assert subjects["model.json"] == hashlib.sha256(
        (out / "candidate" / "model.json").read_bytes()).hexdigest()
    assert subjects["model.safetensors"] == hashlib.sha256(
        (out / "model" / "model.safetensors").read_bytes()).hexdigest()
    pred = st["predicate"]
    decision = json.loads((out / "decision.json").read_text())
    assert pred["registry"] == {"project": "digits", "seq": 1, "parent": None}
    assert (pred["action"], pred["stage"], pred["version"], pred["previous_version"]) == \
        ("promote", "staging", 1, None)
    assert pred["model_digest"] == decision["model"]["digest"]
    assert pred["data"] == json.loads((out / "data-report.json").read_text())["sha256"]
    assert pred["metrics"]["accuracy"] == json.loads(served_metrics_path(out).read_text())[
        "accuracy"]
    assert pred["findings"]["counts"] == json.loads((out / "findings.json").read_text())[
        "counts"]
    assert pred["policy"]["sha256"] == decision["policy_sha256"]
    assert pred["decision"]["outcome"] == "pass"
    assert pred["forced"] is False and pred["reason"] is None and pred["gate"]["problems"] == []
    assert pred["evidence"]["decision.json"] == hashlib.sha256(
        (out / "decision.json").read_bytes()).hexdigest()
    assert pred["by"] and pred["at"] and pred["created_by"] == pred["by"]
    # ci-ml.yaml changed after the commit: the tree is dirty, and says so.
    assert pred["git"] == {"commit": commit, "dirty": True}
    env = json.loads(event.read_text())
    assert env["payloadType"] == "application/vnd.in-toto+json"
    promotion = json.loads((out / "promotion.json").read_text())
    assert env["signatures"][0]["keyid"] == promotion["attestation"]["keyid"]
    assert promotion["head"] == hashlib.sha256(event.read_bytes()).hexdigest()
    rolled = cli(project, "promote", "--stage", "staging", "--force", "--reason", "again")
    assert rolled.code == 0
    second = statement(events(project)[1])["predicate"]["registry"]
    assert second == {"project": "digits", "seq": 2, "parent": promotion["head"]}


def test_verify_passes_with_the_right_key(project: Path) -> None:
    assert cli(project, "promote", "--stage", "staging").code == 0
    _, pub = project_key(project)
    result = cli(project, "verify", "--stage", "staging", "--key", pub)
    assert result.code == 0, result.output
    assert "[ok] history: 1 event(s), each linked to the one before" in result.stdout
    assert "[ok] signatures: all 1 event(s) signed by sha256:" in result.stdout
    assert "staging v1 (promote #1): verified" in result.stdout
    assert "[ok] model file model.onnx" in result.stdout
    assert cli(project, "verify").code == 0   # the configured verify_key


def test_verify_fails_on_a_tampered_model_file(project: Path) -> None:
    assert cli(project, "promote", "--stage", "staging").code == 0
    sha = statement(events(project)[0])["subject"]
    onnx = next(s["digest"]["sha256"] for s in sha if s["name"] == "model.onnx")
    blob = project / REGISTRY / "blobs" / "sha256" / onnx
    overwrite(blob, blob.read_bytes() + b"\0")
    result = cli(project, "verify")
    assert result.code == 1
    assert "[FAIL] model file model.onnx: TAMPERED: model.onnx hashes to" in result.stdout
    assert result.stderr.startswith("error: verification failed: staging v1")


def test_forced_flag_rewritten_fails_verify_and_production(project: Path) -> None:
    """The attack of the issue: a --force staging promotion, then "forced": false written into
    the registry; verify must fail and production must refuse it, naming why."""
    (project / "out" / "decision.json").unlink()
    forced = cli(project, "promote", "--stage", "staging", "--force", "--reason", "demo")
    assert forced.code == 0, forced.output
    assert cli(project, "gate", "--stage", "production").code == 1   # forced: not passed
    (event,) = events(project)
    overwrite(event, resign(event.read_bytes(),
                            lambda st: st["predicate"].update(forced=False), None))
    verified = cli(project, "verify")
    assert verified.code == 1
    assert "event #1" in verified.stdout and "signature INVALID" in verified.stdout
    assert verified.stderr.startswith("error: verification failed: history of")
    gate = cli(project, "gate", "--stage", "production")
    assert gate.code == 1
    assert "signature INVALID" in rules(project)["registry.history"]["message"]
    assert "registry.history" in json.loads(
        (project / "out" / "decision.json").read_text())["blocking"]
    promote = cli(project, "promote", "--stage", "production", "--force", "--reason", "x")
    assert promote.code == 1 and "signature INVALID" in promote.stderr
    assert len(events(project)) == 1


def test_an_extra_rollback_event_fails(project: Path, tmp_path: Path) -> None:
    """The other attack of the issue: an extra rollback moves a stage. Unsigned, or signed by
    another key, it fails; and so does one that leaves a gap in the chain."""
    assert cli(project, "promote", "--stage", "staging").code == 0
    assert cli(project, "promote", "--stage", "staging", "--force", "--reason", "v1 again"
               ).code == 0
    _, last = events(project)
    for key, reason in ((None, "UNSIGNED"), (new_key(), "signature INVALID")):
        extra = project / REGISTRY / "events" / "000003.dsse.json"
        extra.write_bytes(forged_rollback(last.read_bytes(), "staging", 1, 1, key))
        result = cli(project, "verify")
        assert result.code == 1 and "event #3" in result.stdout and reason in result.stdout
        assert cli(project, "gate", "--stage", "production").code == 1
        assert reason in rules(project)["registry.history"]["message"]
        extra.unlink()
    assert cli(project, "promote", "--stage", "staging", "--force", "--reason", "third"
               ).code == 0
    events(project)[1].unlink()                                  # drop event #2 of 3
    result = cli(project, "verify")
    assert result.code == 1 and "event #2" in result.stdout
    assert "says it is event #3" in result.stdout


def test_a_dropped_tail_is_caught_by_the_recorded_head(project: Path) -> None:
    assert cli(project, "promote", "--stage", "staging").code == 0
    assert cli(project, "gate", "--stage", "production").code == 0
    assert cli(project, "promote", "--stage", "production").code == 0
    head = json.loads((project / "out" / "promotion.json").read_text())["head"]
    assert cli(project, "verify", "--head", head).code == 0
    events(project)[-1].unlink()
    result = cli(project, "verify", "--head", head)
    assert result.code == 1 and f"DROPPED: the recorded head {head[:12]}" in result.stdout


def test_a_swapped_repository_key_cannot_launder_a_forged_history(project: Path) -> None:
    """The attacker replaces the committed public key and re-signs a forged history with
    their own key: the repository's view verifies, but the CI secret key does not."""
    assert cli(project, "promote", "--stage", "staging", "--force", "--reason", "x").code == 0
    attacker = new_key()
    (event,) = events(project)
    overwrite(event, resign(event.read_bytes(), lambda st: st["predicate"].update(forced=False),
                            attacker))
    private, pub = project_key(project)
    pub.write_bytes(attacker.public_pem())
    edit_config(project, lambda d: d.__setitem__("registry", {"verify_key":
                                                              "keys/signing.pem.pub"}))
    assert cli(project, "verify").code == 0           # fooled: the repository's key
    ci = {"CI_ML_SIGNING_KEY": str(private)}
    promote = cli(project, "promote", "--stage", "production", "--force", "--reason", "x",
                  env=ci)
    assert promote.code == 2
    assert "registry.verify_key" in promote.stderr and \
        "is not the public key of the signing key" in promote.stderr
    gate = cli(project, "gate", "--stage", "production", env=ci)
    assert gate.code == 1
    assert "signature INVALID" in rules(project)["registry.history"]["message"]
    assert cli(project, "verify", env=ci).code == 1


def test_verify_fails_with_another_key(project: Path) -> None:
    assert cli(project, "promote", "--stage", "staging").code == 0
    _, other_pub, _ = keygen(project, "other.pem")
    result = cli(project, "verify", "--key", other_pub)
    assert result.code == 1 and "signature INVALID: no valid signature by the trusted key" \
        in result.stdout


def test_key_material_is_never_printed(project: Path) -> None:
    private, pub = project_key(project)
    assert cli(project, "promote", "--stage", "staging").code == 0
    secret = "".join(private.read_text().splitlines()[1:-1])
    outputs = [cli(project, "verify", "--key", pub), cli(project, "registry", "history"),
               cli(project, "registry", "list", "--json")]
    for r in outputs:
        assert secret not in r.output.replace("\n", "")
    for path in (project / REGISTRY).rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes().replace(b"\n", b"")


def test_a_bad_signing_key_is_a_usage_error_and_writes_nothing(project: Path) -> None:
    private, _ = project_key(project)
    private.write_text("-----BEGIN PRIVATE KEY-----\nnope\n")
    result = cli(project, "promote", "--stage", "staging")
    assert result.code == 2
    assert result.stderr.strip().endswith("keys/signing.pem: not a PEM private key "
                                          "(or wrong passphrase)")
    assert "nope" not in result.output
    assert not (project / REGISTRY).exists()


def test_verify_usage_errors(project: Path) -> None:
    nothing = cli(project, "verify")
    assert nothing.code == 2 and "holds no promoted model" in nothing.stderr
    both = cli(project, "verify", "--stage", "staging", "--version", "1")
    assert both.code == 2 and both.stderr.startswith("error: pass --stage or --version")
    bad = cli(project, "verify", "--version", "latest")
    assert bad.code == 2 and "expected a version like 3 or v3" in bad.stderr
