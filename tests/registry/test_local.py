"""The local directory backend on small real files: stacks, passed digests, the lock."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest

from ci_ml.errors import ToolError
from ci_ml.fsutil import sha256_file
from ci_ml.registry.interface import HistoryEntry, ModelIdentity, Promotion, RegistryError
from ci_ml.registry.local import LocalRegistry


def model_dir(root: Path, tag: str) -> Path:
    for rel in ("candidate/model.onnx", "model/model.safetensors", "candidate/model.json"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(f"{rel} {tag}")
    return root


def promotion(out: Path, stage: str, forced: bool = False) -> Promotion:
    identity = ModelIdentity.from_out_dir(out)
    return Promotion(stage, identity, ModelIdentity.source_paths(out), {"accuracy": 0.9}, {},
                     {}, {}, forced, "r" if forced else None, "tester")


def no_attestation(entry: HistoryEntry, version: object) -> tuple[bytes, str | None]:
    return b"{}", None


def test_identity_ignores_the_card_but_stores_it(tmp_path: Path) -> None:
    a = model_dir(tmp_path / "a", "1")
    ident = ModelIdentity.from_out_dir(a)
    (a / "candidate" / "model.json").write_text("another card")
    assert ModelIdentity.from_out_dir(a).digest == ident.digest
    (a / "candidate" / "model.onnx.data").write_text("external weights")
    assert ModelIdentity.from_out_dir(a).digest != ident.digest
    assert set(ident.files) == {"model.onnx", "model.safetensors", "model.json"}


def test_stage_stack_and_passed(tmp_path: Path) -> None:
    reg = LocalRegistry(tmp_path / "reg")
    outs = [model_dir(tmp_path / f"m{i}", str(i)) for i in range(3)]
    reg.promote(promotion(outs[0], "staging"), no_attestation)
    reg.promote(promotion(outs[1], "staging", forced=True), no_attestation)
    reg.promote(promotion(outs[2], "staging"), no_attestation)
    state = reg.state()
    digests = [ModelIdentity.from_out_dir(o).digest for o in outs]
    current = state.current("staging")
    assert current is not None and current.version == 3
    # Forced promotions never count as having passed the stage.
    assert state.passed("staging") == {digests[0], digests[2]}
    reg.rollback("staging", "tester", "bad")
    state = reg.state()
    assert state.current("staging").version == 2  # type: ignore[union-attr]
    assert state.passed("staging") == {digests[0]}  # a rolled-back model no longer counts


def test_blobs_are_content_addressed_and_repaired(tmp_path: Path) -> None:
    reg = LocalRegistry(tmp_path / "reg")
    out = model_dir(tmp_path / "m", "1")
    reg.promote(promotion(out, "staging"), no_attestation)
    onnx_sha = sha256_file(out / "candidate" / "model.onnx")
    blob = reg.blob_path(onnx_sha)
    assert blob.read_text() == "candidate/model.onnx 1"
    os.chmod(blob, 0o644)
    blob.write_text("tampered")
    reg.promote(promotion(out, "production"), no_attestation)  # same model again
    assert sha256_file(blob) == onnx_sha


def test_a_held_lock_times_out_as_a_tool_error(tmp_path: Path) -> None:
    reg = LocalRegistry(tmp_path / "reg", lock_timeout_s=0.2)
    out = model_dir(tmp_path / "m", "1")
    (tmp_path / "reg").mkdir()
    fd = os.open(tmp_path / "reg" / ".lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(ToolError, match="locked by another process"):
            reg.promote(promotion(out, "staging"), no_attestation)
    finally:
        os.close(fd)
    assert not (tmp_path / "reg" / "index.json").exists()
    reg.promote(promotion(out, "staging"), no_attestation)  # released: works


def test_index_naming_unknown_versions_is_corrupt(tmp_path: Path) -> None:
    reg = LocalRegistry(tmp_path / "reg")
    out = model_dir(tmp_path / "m", "1")
    reg.promote(promotion(out, "staging"), no_attestation)
    text = reg.index_path.read_text().replace('"version": 1,', '"version": 7,', 1)
    reg.index_path.write_text(text)
    with pytest.raises(RegistryError, match="corrupt"):
        reg.state()


def test_unknown_version_lists_known_ones(tmp_path: Path) -> None:
    reg = LocalRegistry(tmp_path / "reg")
    reg.promote(promotion(model_dir(tmp_path / "m", "1"), "staging"), no_attestation)
    with pytest.raises(RegistryError, match=r"no version v9 in the registry \(versions: v1\)"):
        reg.state().version(9)
