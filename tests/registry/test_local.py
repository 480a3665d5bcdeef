"""The local directory backend: the conformance suite, plus what only a directory has."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from ci_ml.errors import ToolError
from ci_ml.registry.interface import RegistryError
from ci_ml.registry.local import LocalBackend
from tests.registry.conformance import Conformance, Harness, Tamper, model_dir, new_key, promotion


class LocalTamper(Tamper):
    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, seq: int) -> Path:
        return self.root / "events" / f"{seq:06d}.dsse.json"

    def events(self) -> list[bytes]:
        folder = self.root / "events"
        return [p.read_bytes() for p in sorted(folder.glob("*.dsse.json"))] \
            if folder.is_dir() else []

    def replace(self, seq: int, envelope: bytes) -> None:
        path = self._path(seq)
        path.unlink()
        path.write_bytes(envelope)

    def remove(self, seq: int) -> None:
        self._path(seq).unlink()

    def append(self, envelope: bytes) -> None:
        self._path(len(self.events()) + 1).write_bytes(envelope)

    def rewrite_all(self, envelopes: list[bytes]) -> None:
        for path in (self.root / "events").glob("*.dsse.json"):
            path.unlink()
        for seq, data in enumerate(envelopes, start=1):
            self._path(seq).write_bytes(data)

    def corrupt_blob(self, sha256: str, version: int, name: str) -> None:
        blob = self.root / "blobs" / "sha256" / sha256
        blob.chmod(0o644)
        blob.write_bytes(blob.read_bytes() + b"\0")


class TestLocalConformance(Conformance):
    @pytest.fixture
    def harness(self, tmp_path: Path) -> Iterator[Harness]:
        root = tmp_path / "registry"
        yield Harness(lambda: LocalBackend(root, lock_timeout_s=60), LocalTamper(root),
                      new_key())


def test_identity_is_the_onnx_and_its_card_not_the_weights(tmp_path: Path) -> None:
    from ci_ml.registry.interface import ModelIdentity

    a = model_dir(tmp_path / "a", "1")
    ident = ModelIdentity.from_out_dir(a)
    (a / "candidate" / "model.json").write_text("another card")
    assert ModelIdentity.from_out_dir(a).digest != ident.digest
    (a / "candidate" / "model.json").write_text("candidate/model.json 1")
    (a / "model" / "model.safetensors").unlink()     # the team's own training: ONNX + card
    only_onnx = ModelIdentity.from_out_dir(a)
    assert only_onnx.digest == ident.digest
    assert set(only_onnx.files) == {"model.onnx", "model.json"}
    (a / "candidate" / "model.onnx.data").write_text("external weights")
    assert ModelIdentity.from_out_dir(a).digest != ident.digest


def test_a_held_lock_times_out_as_a_tool_error(tmp_path: Path) -> None:
    root = tmp_path / "reg"
    harness = Harness(lambda: LocalBackend(root, lock_timeout_s=0.2), LocalTamper(root),
                      new_key())
    out = model_dir(tmp_path / "m", "1")
    root.mkdir()
    fd = os.open(root / ".lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(ToolError, match="locked by another process"):
            harness.registry().promote(promotion(out, "staging"))
    finally:
        os.close(fd)
    assert not (root / "events").exists()
    harness.registry().promote(promotion(out, "staging"))  # released: works


def test_an_event_is_never_overwritten(tmp_path: Path) -> None:
    root = tmp_path / "reg"
    harness = Harness(lambda: LocalBackend(root), LocalTamper(root), new_key())
    harness.registry().promote(promotion(model_dir(tmp_path / "m", "1"), "staging"))
    first = (root / "events" / "000001.dsse.json").read_bytes()
    # A second writer that ignored the lock and computed the same sequence number.
    backend = LocalBackend(root)
    from ci_ml.registry.interface import NewEvent

    state = harness.registry().state()
    with pytest.raises(RegistryError, match="event #1 exists already"):
        backend.write_event(NewEvent(b"{}", state.history[0], state.versions[1], False), None)
    assert (root / "events" / "000001.dsse.json").read_bytes() == first


def test_a_registry_of_the_old_format_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "reg"
    root.mkdir()
    (root / "index.json").write_text('{"format": 1, "versions": [], "history": []}')
    with pytest.raises(RegistryError, match="older ci-ml .* cannot be verified"):
        LocalBackend(root).read_events()


def test_a_registry_path_that_is_a_file_is_bad_input(tmp_path: Path) -> None:
    (tmp_path / "reg").write_text("not a directory")
    with pytest.raises(RegistryError, match="exists and is not a directory"):
        LocalBackend(tmp_path / "reg").read_events()
