"""Signed promotions and `ci-ml verify` through the real CLI; tampering must fail verification."""

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

REGISTRY = Path(".ci-ml") / "registry"


def keygen(project: Path, name: str = "signing.pem") -> tuple[Path, Path, str]:
    key = project / "keys" / name
    result = cli(project, "registry", "keygen", key)
    assert result.code == 0, result.output
    keyid = result.stdout.strip().rsplit("key id ", 1)[1]
    return key, key.with_name(name + ".pub"), keyid


def signed_project(project: Path) -> tuple[Path, Path, str]:
    key, pub, keyid = keygen(project)
    edit_config(project, lambda d: d.__setitem__("registry", {"signing_key": "keys/signing.pem"}))
    # The config changed (not the policy): the decision still admits the model.
    result = cli(project, "promote", "--stage", "staging")
    assert result.code == 0, result.output
    assert f"signed by {keyid}" in result.stdout
    return key, pub, keyid


def index(project: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((project / REGISTRY / "index.json").read_text())
    return data


def envelope_path(project: Path) -> Path:
    return project / REGISTRY / index(project)["history"][-1]["attestation"]["path"]


def statement(project: Path) -> dict[str, Any]:
    env = json.loads(envelope_path(project).read_text())
    data: dict[str, Any] = json.loads(base64.b64decode(env["payload"]))
    return data


def test_keygen_writes_a_private_key_only_its_owner_reads(project: Path) -> None:
    key, pub, keyid = keygen(project)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert pub.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    assert keyid.startswith("sha256:")
    again = cli(project, "registry", "keygen", key)
    assert again.code == 2 and "refusing to overwrite" in again.stderr


def test_statement_binds_model_data_metrics_findings_policy_and_commit(project: Path) -> None:
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    subprocess.run(["git", "-c", "user.email=t@e", "-c", "user.name=t", "add", "ci-ml.yaml"],
                   cwd=project, check=True)
    subprocess.run(["git", "-c", "user.email=t@e", "-c", "user.name=t", "commit", "-qm", "x"],
                   cwd=project, check=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project, check=True,
                            capture_output=True, text=True).stdout.strip()
    key, _, keyid = signed_project(project)
    st = statement(project)
    out = project / "out"
    assert st["_type"] == "https://in-toto.io/Statement/v1"
    subjects = {s["name"]: s["digest"]["sha256"] for s in st["subject"]}
    assert subjects["model.onnx"] == hashlib.sha256(
        (out / "candidate" / "model.onnx").read_bytes()).hexdigest()
    assert subjects["model.safetensors"] == hashlib.sha256(
        (out / "model" / "model.safetensors").read_bytes()).hexdigest()
    pred = st["predicate"]
    decision = json.loads((out / "decision.json").read_text())
    assert pred["model_digest"] == decision["model"]["digest"]
    assert pred["data"] == json.loads((out / "data-report.json").read_text())["sha256"]
    assert pred["metrics"]["accuracy"] == json.loads(served_metrics_path(out).read_text())[
        "accuracy"]
    assert pred["findings"]["counts"] == json.loads((out / "findings.json").read_text())[
        "counts"]
    assert pred["policy"]["sha256"] == decision["policy_sha256"]
    assert pred["decision"]["outcome"] == "pass"
    # ci-ml.yaml gained the signing key after the commit: the tree is dirty, and says so.
    assert pred["git"] == {"commit": commit, "dirty": True}
    assert pred["forced"] is False and pred["stage"] == "staging"
    env = json.loads(envelope_path(project).read_text())
    assert env["payloadType"] == "application/vnd.in-toto+json"
    assert env["signatures"][0]["keyid"] == keyid


def test_verify_passes_with_the_right_key(project: Path) -> None:
    _, pub, keyid = signed_project(project)
    result = cli(project, "verify", "--stage", "staging", "--key", pub)
    assert result.code == 0, result.output
    assert "staging v1 (promotion #1): verified" in result.stdout
    assert f"[ok] signature: valid ed25519 signature by {keyid}" in result.stdout
    # Without --key the configured signing key's public half is used.
    assert cli(project, "verify").code == 0


def test_verify_fails_on_a_tampered_model_file(project: Path) -> None:
    _, pub, _ = signed_project(project)
    sha = index(project)["versions"][0]["files"]["model.onnx"]
    blob = project / REGISTRY / "blobs" / "sha256" / sha
    blob.chmod(0o644)
    blob.write_bytes(blob.read_bytes() + b"\0")
    result = cli(project, "verify", "--key", pub)
    assert result.code == 1
    assert "[FAIL] model file model.onnx: TAMPERED: model.onnx hashes to" in result.stdout
    assert result.stderr.startswith("error: verification failed: staging v1")


def test_verify_fails_on_a_tampered_attestation(project: Path) -> None:
    _, pub, _ = signed_project(project)
    path = envelope_path(project)
    env = json.loads(path.read_text())
    st = json.loads(base64.b64decode(env["payload"]))
    st["predicate"]["metrics"]["accuracy"] = 1.0
    env["payload"] = base64.b64encode(json.dumps(st).encode()).decode()
    path.write_text(json.dumps(env))
    result = cli(project, "verify", "--key", pub)
    assert result.code == 1
    assert "[FAIL] attestation file: TAMPERED" in result.stdout
    assert "[FAIL] signature: INVALID" in result.stdout
    # An attacker who also rewrites the index's record of the file still fails the signature.
    idx = index(project)
    idx["history"][-1]["attestation"]["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    (project / REGISTRY / "index.json").write_text(json.dumps(idx))
    result = cli(project, "verify", "--key", pub)
    assert result.code == 1
    assert "[ok] attestation file" in result.stdout
    assert "[FAIL] signature: INVALID" in result.stdout


def test_verify_fails_with_another_key(project: Path) -> None:
    signed_project(project)
    _, other_pub, _ = keygen(project, "other.pem")
    result = cli(project, "verify", "--key", other_pub)
    assert result.code == 1 and "INVALID: no valid signature by" in result.stdout


def test_unsigned_promotion_fails_when_a_key_is_expected(project: Path) -> None:
    assert cli(project, "promote", "--stage", "staging").code == 0
    unchecked = cli(project, "verify")
    assert unchecked.code == 0
    assert "[skipped] signature: unsigned promotion" in unchecked.stdout
    _, pub, _ = keygen(project)
    result = cli(project, "verify", "--key", pub)
    assert result.code == 1 and "expected a signature" in result.stdout


def test_key_material_is_never_printed(project: Path) -> None:
    key, pub, _ = signed_project(project)
    secret = "".join(key.read_text().splitlines()[1:-1])
    outputs = [cli(project, "verify", "--key", pub), cli(project, "registry", "history"),
               cli(project, "registry", "list", "--json")]
    for r in outputs:
        assert secret not in r.output.replace("\n", "")
    for path in (project / REGISTRY).rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes().replace(b"\n", b"")


def test_a_bad_signing_key_is_a_usage_error_and_writes_nothing(project: Path) -> None:
    (project / "keys").mkdir()
    (project / "keys" / "signing.pem").write_text("-----BEGIN PRIVATE KEY-----\nnope\n")
    edit_config(project, lambda d: d.__setitem__("registry", {"signing_key": "keys/signing.pem"}))
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
