"""The OCI backend against a real CNCF distribution registry on 127.0.0.1: the conformance
suite, plus what only OCI has (artifact layout, referrers, stage tags, the tag lock)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ci_ml.errors import ToolError
from ci_ml.fsutil import sha256_bytes
from ci_ml.registry.oci import ENVELOPE, MEDIA_TYPES, MODEL_ARTIFACT, OciBackend, TagLock
from tests.registry.conformance import Conformance, Harness, Tamper, model_dir, new_key, promotion
from tests.registry.servers import Distribution


class OciTamper(Tamper):
    """Pushes and deletes through the registry's API, and edits its storage directly."""

    def __init__(self, backend: OciBackend, server: Distribution) -> None:
        self.b = backend
        self.server = server

    def _tags(self) -> list[str]:
        return sorted(t for t in self.b.tags() if t.startswith("event-"))

    def events(self) -> list[bytes]:
        return [e.envelope for e in self.b.read_events()]

    def _push(self, tag: str, envelope: bytes, like: str | None) -> None:
        layer = self.b.put_blob(None, envelope, ENVELOPE, "forged.dsse.json")
        source = self.b.get_manifest(like or self._tags()[-1])
        assert source is not None
        manifest = json.loads(source[0])
        manifest["layers"] = [layer] + [la for la in manifest["layers"]
                                        if la["mediaType"] != ENVELOPE]
        self.b.put_manifest(tag, json.dumps(manifest).encode())

    def replace(self, seq: int, envelope: bytes) -> None:
        self._push(f"event-{seq:06d}", envelope, f"event-{seq:06d}")

    def remove(self, seq: int) -> None:
        found = self.b.get_manifest(f"event-{seq:06d}")
        assert found is not None and self.b.delete_manifest(found[1])

    def append(self, envelope: bytes) -> None:
        self._push(f"event-{len(self._tags()) + 1:06d}", envelope, None)

    def corrupt_blob(self, sha256: str, version: int, name: str) -> None:
        path = self.server.blob_file(sha256)
        path.write_bytes(path.read_bytes() + b"\0")


def open_oci(server: Distribution, repo: str) -> OciBackend:
    # Twenty writers queue on one lock; on a loaded machine that takes a while.
    return OciBackend(f"oci://{server.host}/{repo}", lock_timeout_s=600)


class TestOciConformance(Conformance):
    @pytest.fixture
    def harness(self, distribution: Distribution) -> Iterator[Harness]:
        repo = f"conformance/{uuid.uuid4().hex[:12]}"
        yield Harness(lambda: open_oci(distribution, repo),
                      OciTamper(open_oci(distribution, repo), distribution), new_key())


def test_versions_are_artifacts_events_are_referrers_stages_are_tags(
        distribution: Distribution, tmp_path: Path) -> None:
    repo = f"layout/{uuid.uuid4().hex[:12]}"
    harness = Harness(lambda: open_oci(distribution, repo), OciTamper(
        open_oci(distribution, repo), distribution), new_key())
    out = model_dir(tmp_path / "m", "1")
    (out / "metrics.json").write_text('{"accuracy": 0.9}')
    p = promotion(out, "staging")
    from dataclasses import replace

    p = replace(p, evidence={**p.evidence, "metrics.json": out / "metrics.json"})
    reg = harness.registry()
    reg.promote(p)
    reg.promote(promotion(out, "production", requires="staging"))
    b = open_oci(distribution, repo)
    assert {"v1", "event-000001", "event-000002", "staging", "production"} <= set(b.tags())
    v1_body, v1_digest = b.get_manifest("v1")  # type: ignore[misc]
    v1 = json.loads(v1_body)
    assert v1["artifactType"] == MODEL_ARTIFACT
    layers = {la["annotations"]["org.opencontainers.image.title"]: la for la in v1["layers"]}
    assert set(layers) == {"model.onnx", "model.json", "model.safetensors", "metrics.json"}
    for name, layer in layers.items():
        assert layer["mediaType"] == MEDIA_TYPES[name]
    onnx = (out / "candidate" / "model.onnx").read_bytes()
    assert layers["model.onnx"]["digest"] == "sha256:" + sha256_bytes(onnx)
    assert b.get_manifest("staging")[1] == v1_digest  # type: ignore[index]
    assert b.get_manifest("production")[1] == v1_digest  # type: ignore[index]
    event = json.loads(b.get_manifest("event-000001")[0])  # type: ignore[index]
    assert event["artifactType"] == ENVELOPE and event["subject"]["digest"] == v1_digest
    referrers = json.loads(b.get_manifest(v1_digest.replace(":", "-"))[0])  # type: ignore
    assert len(referrers["manifests"]) == 2
    assert {m["artifactType"] for m in referrers["manifests"]} == {ENVELOPE}


def test_the_tag_lock_excludes_and_expires(distribution: Distribution) -> None:
    b = open_oci(distribution, f"lock/{uuid.uuid4().hex[:12]}")
    first = TagLock(b, timeout_s=60)
    first.acquire()
    second = TagLock(b, timeout_s=0.5, lease_s=60)
    with pytest.raises(ToolError, match="registry is locked by .*@.*for more than"):
        second.acquire()
    first.release()
    second.acquire()                       # released: free
    assert second.rivals(mine=second.tag) == [] and first.rivals() != []
    # A holder that died (second never releases) leaves its tag; past the lease it no
    # longer counts.
    time.sleep(0.5)
    third = TagLock(b, timeout_s=30, lease_s=0.3)
    third.acquire()
    third.release()
    assert [t for t in b.tags() if t.startswith("lock-")] == [second.tag]


def test_cli_promotes_to_oci_and_deploy_pulls_the_gated_model_by_digest(
        project: Path, distribution: Distribution, tmp_path: Path) -> None:
    """The trained example, promoted through the CLI to the distribution server; the
    rendered Deployment pulls exactly the attested artifact, by manifest digest."""
    import yaml

    from tests.gate.trained import cli, edit_config

    registry = f"oci://{distribution.host}/cli/{uuid.uuid4().hex[:12]}"
    env = {"CI_ML_REGISTRY": registry}
    promoted = cli(project, "promote", "--stage", "staging", env=env)
    assert promoted.code == 0, promoted.output
    assert f"event #1 {registry}:event-000001@sha256:" in promoted.stdout
    assert not (project / ".ci-ml" / "registry").exists()
    gate = cli(project, "gate", "--stage", "production", env=env)
    assert gate.code == 0, gate.output            # the production gate reads staging back
    assert cli(project, "promote", "--stage", "production", env=env).code == 0
    assert cli(project, "verify", env=env).code == 0
    edit_config(project, lambda d: d.setdefault("deploy", {}).setdefault(
        "kubernetes", {}).__setitem__("model_from", "oci"))
    rendered = cli(project, "deploy", "render", "--no-validate", env=env)
    assert rendered.code == 0, rendered.output
    deployment = yaml.safe_load((project / "out" / "k8s" / "deployment.yaml").read_text())
    pod = deployment["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    ref = init["args"][1]
    b = OciBackend(registry, lock_timeout_s=60)
    body, digest = b.get_manifest("v1")  # type: ignore[misc]
    assert ref == f"{distribution.host}/{b.repo}@{digest}"
    assert pod["containers"][0]["command"][4] == "/models/model.onnx"
    # What the init container pulls is what was gated: the ONNX file of the out dir.
    layers = {la["annotations"]["org.opencontainers.image.title"]: la["digest"]
              for la in json.loads(body)["layers"]}
    onnx = (project / "out" / "candidate" / "model.onnx").read_bytes()
    assert layers["model.onnx"] == "sha256:" + sha256_bytes(onnx)
    # A layer swapped in the registry is refused at render time.
    manifest = json.loads(body)
    at = next(i for i, la in enumerate(manifest["layers"])
              if la["annotations"]["org.opencontainers.image.title"] == "model.onnx")
    manifest["layers"][at] = b.put_blob(None, b"evil", MEDIA_TYPES["model.onnx"], "model.onnx")
    b.put_manifest("v1", json.dumps(manifest).encode())
    refused = cli(project, "deploy", "render", "--no-validate", env=env)
    assert refused.code == 1
    assert "differ from the files its signed history attests" in refused.stderr
