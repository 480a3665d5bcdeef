"""The conformance suite every registry backend passes: the same promotions, rollbacks,
verification and attacks on the local directory, an OCI registry and an MLflow server.

A backend's test module subclasses ``Conformance`` and provides the ``harness`` fixture:
a fresh, empty registry plus a ``Tamper`` that edits the backend's storage the way an
attacker with write access to it would (but without the signing key).
"""

from __future__ import annotations

import base64
import json
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ci_ml.attest import dsse
from ci_ml.attest.keys import Ed25519Signer
from ci_ml.attest.verify import verify_entry, verify_history
from ci_ml.errors import BlockedError
from ci_ml.fsutil import sha256_bytes
from ci_ml.registry.history import Registry
from ci_ml.registry.interface import (
    Action,
    BlobRef,
    ModelIdentity,
    Promotion,
    RegistryBackend,
    RegistryError,
    RegistryTampered,
)
from ci_ml.registry.trust import Trust

PROJECT = "conformance"


def new_key() -> Ed25519Signer:
    return Ed25519Signer(Ed25519PrivateKey.generate())


def model_dir(root: Path, tag: str) -> Path:
    """A candidate's files (ONNX, card, weights) with distinct contents per tag."""
    for rel in ("candidate/model.onnx", "candidate/model.json", "model/model.safetensors"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(f"{rel} {tag}")
    (root / "decision.json").write_text(json.dumps({"tag": tag}))
    return root


def promotion(out: Path, stage: str, *, problems: tuple[str, ...] = (), force: bool = False,
              requires: str | None = None, user: str = "tester") -> Promotion:
    identity = ModelIdentity.from_out_dir(out)
    return Promotion(stage, identity, ModelIdentity.source_paths(out), {"accuracy": 0.9},
                     {"train": "ab" * 32}, {"decision.json": out / "decision.json"},
                     {"decision": "pass"}, problems, force, "because" if force else None, user,
                     requires, {"policy": {"stage": stage}})


class Tamper(ABC):
    """Writes to a backend's storage as an attacker without the signing key would."""

    @abstractmethod
    def events(self) -> list[bytes]:
        """The stored envelopes, in order."""

    @abstractmethod
    def replace(self, seq: int, envelope: bytes) -> None:
        """Overwrite event ``seq`` in place."""

    @abstractmethod
    def remove(self, seq: int) -> None:
        """Delete event ``seq`` (later events keep their places)."""

    @abstractmethod
    def append(self, envelope: bytes) -> None:
        """Store an extra event after the last one."""

    @abstractmethod
    def corrupt_blob(self, sha256: str, version: int, name: str) -> None:
        """Change the stored bytes of a blob the history names."""

    def rewrite_all(self, envelopes: list[bytes]) -> None:
        """Make the stored chain exactly ``envelopes``."""
        current = self.events()
        for seq in range(len(current), len(envelopes), -1):
            self.remove(seq)
        for seq, data in enumerate(envelopes, start=1):
            if seq <= len(current):
                self.replace(seq, data)
            else:
                self.append(data)


@dataclass
class Harness:
    open: Callable[[], RegistryBackend]   # a new client of the same (initially empty) registry
    tamper: Tamper
    key: Ed25519Signer

    def registry(self, *, signer: Ed25519Signer | None = None, required: bool = True,
                 verifier_key: Ed25519Signer | None = None,
                 project: str = PROJECT) -> Registry:
        signer = self.key if signer is None else signer
        verifier = (verifier_key or signer).verifier()
        return Registry(self.open(), Trust(required, verifier, signer, project, "test"))


def resign(envelope: bytes, change: Callable[[dict], None], key: Ed25519Signer | None) -> bytes:
    """The envelope with its statement changed; signed by ``key``, or keeping the old
    signatures (an edit by someone without the key) when ``key`` is None."""
    doc = json.loads(envelope)
    statement = json.loads(base64.b64decode(doc["payload"]))
    change(statement)
    payload = json.dumps(statement, sort_keys=True, separators=(",", ":")).encode()
    doc["payload"] = base64.b64encode(payload).decode()
    if key is not None:
        pae = dsse.pae(doc["payloadType"], payload)
        doc["signatures"] = [{"keyid": key.keyid, "sig": base64.b64encode(key.sign(pae)).decode()}]
    return json.dumps(doc).encode()


def forged_rollback(last: bytes, stage: str, to_version: int, from_version: int,
                    key: Ed25519Signer | None) -> bytes:
    """An extra rollback event placed after ``last`` (linked and numbered correctly)."""
    def change(st: dict) -> None:
        pred = st["predicate"]
        pred["registry"]["seq"] += 1
        pred["registry"]["parent"] = sha256_bytes(last)
        pred.update(action="rollback", stage=stage, version=to_version,
                    previous_version=from_version, forced=False, reason="forged", evidence={})
    doc = resign(last, change, key)
    if key is None:
        envelope = json.loads(doc)
        envelope["signatures"] = []
        doc = json.dumps(envelope).encode()
    return doc


class Conformance:
    """Subclasses provide ``harness`` (function scope) and may mark slow backends."""

    # ------------------------------------------------------------- semantics

    def test_stages_are_stacks_and_forced_promotions_never_pass(self, harness: Harness,
                                                                tmp_path: Path) -> None:
        reg = harness.registry()
        outs = [model_dir(tmp_path / f"m{i}", str(i)) for i in range(3)]
        assert reg.state().history == ()
        reg.promote(promotion(outs[0], "staging"))
        forced = reg.promote(promotion(outs[1], "staging", problems=("gate blocked",),
                                       force=True))
        assert forced.forced and forced.gate["problems"] == ["gate blocked"]
        reg.promote(promotion(outs[2], "staging"))
        digests = [ModelIdentity.from_out_dir(o).digest for o in outs]
        state = harness.registry().state()          # a second client reads the same history
        assert [e.version for e in state.history] == [1, 2, 3]
        assert [e.previous for e in state.history] == [None, 1, 2]
        assert state.current("staging").version == 3  # type: ignore[union-attr]
        assert state.passed("staging") == {digests[0], digests[2]}
        back = reg.rollback("staging", "tester", "bad")
        assert (back.action, back.version, back.previous) == (Action.ROLLBACK, 2, 3)
        state = reg.state()
        assert state.current("staging").version == 2  # type: ignore[union-attr]
        assert state.passed("staging") == {digests[0]}
        assert reg.rollback("staging", "tester", None).version == 1
        with pytest.raises(RegistryError, match="nothing to roll back to"):
            reg.rollback("staging", "tester", None)

    def test_a_known_model_keeps_its_version_and_production_needs_staging(
            self, harness: Harness, tmp_path: Path) -> None:
        reg = harness.registry()
        out = model_dir(tmp_path / "m", "1")
        with pytest.raises(BlockedError, match="does not hold staging through a gated"):
            reg.promote(promotion(out, "production", requires="staging"))
        assert reg.state().history == ()
        reg.promote(promotion(out, "staging"))
        prod = reg.promote(promotion(out, "production", requires="staging"))
        state = reg.state()
        assert prod.version == 1 and len(state.versions) == 1
        assert [(e.stage, e.version) for e in state.history] == [("staging", 1),
                                                                  ("production", 1)]

    def test_refused_promotion_writes_nothing(self, harness: Harness, tmp_path: Path) -> None:
        reg = harness.registry()
        with pytest.raises(BlockedError, match="refused: gate blocked"):
            reg.promote(promotion(model_dir(tmp_path / "m", "1"), "staging",
                                  problems=("gate blocked",)))
        assert harness.tamper.events() == []

    def test_files_and_evidence_come_back_as_attested(self, harness: Harness,
                                                     tmp_path: Path) -> None:
        reg = harness.registry()
        out = model_dir(tmp_path / "m", "1")
        entry = reg.promote(promotion(out, "staging"))
        other = harness.registry()
        state = other.state()
        result = verify_entry(other, state, state.history[0])
        assert result.ok, result.failures
        names = {c.name for c in result.checks}
        assert {"model file model.onnx", "model file model.json",
                "model file model.safetensors", "evidence decision.json"} <= names
        blob = next(sha for name, sha in state.versions[1].files.items() if name == "model.onnx")
        assert other.fetch(BlobRef(blob, "model.onnx", 1)).read_text() == \
            "candidate/model.onnx 1"
        assert entry.attestation and entry.attestation.signed
        assert entry.attestation.keyid == harness.key.keyid

    def test_unsigned_history_when_signing_is_off(self, harness: Harness, tmp_path: Path) -> None:
        off = Registry(harness.open(), Trust(False, None, None, PROJECT, "registry.signing: off"))
        entry = off.promote(promotion(model_dir(tmp_path / "m", "1"), "staging"))
        assert entry.attestation and not entry.attestation.signed
        state = off.state()
        assert state.unsigned == 1 and state.signing == "off"
        # Where a key makes signatures required, the same history fails.
        with pytest.raises(RegistryTampered, match="UNSIGNED"):
            harness.registry().state()
        with pytest.raises(RegistryTampered):
            harness.registry().promote(promotion(model_dir(tmp_path / "n", "2"), "staging"))

    # ------------------------------------------------------------- attacks

    def _three_events(self, harness: Harness, tmp_path: Path) -> Registry:
        """staging v1 (gated), staging v2 (FORCED), production v1: three signed events."""
        reg = harness.registry()
        one, two = model_dir(tmp_path / "m1", "1"), model_dir(tmp_path / "m2", "2")
        reg.promote(promotion(one, "staging"))
        reg.promote(promotion(two, "staging", problems=("gate blocked",), force=True))
        reg.promote(promotion(one, "production", requires="staging"))
        return reg

    def test_flipping_forced_in_a_statement_fails_and_blocks(self, harness: Harness,
                                                            tmp_path: Path) -> None:
        reg = self._three_events(harness, tmp_path)
        events = harness.tamper.events()
        edited = resign(events[1], lambda st: st["predicate"].update(forced=False), None)
        harness.tamper.replace(2, edited)
        with pytest.raises(RegistryTampered, match=r"event #2 .*signature INVALID"):
            reg.state()
        history, state = verify_history(reg)
        assert not history.ok and state is None
        # Nothing can be appended to a history that fails verification.
        with pytest.raises(RegistryTampered):
            reg.promote(promotion(model_dir(tmp_path / "m3", "3"), "staging"))
        assert len(harness.tamper.events()) == 3

    def test_an_extra_unsigned_rollback_fails(self, harness: Harness, tmp_path: Path) -> None:
        reg = self._three_events(harness, tmp_path)
        last = harness.tamper.events()[-1]
        harness.tamper.append(forged_rollback(last, "staging", 1, 2, None))
        with pytest.raises(RegistryTampered, match=r"event #4 .*UNSIGNED"):
            reg.state()

    def test_an_extra_rollback_signed_by_another_key_fails(self, harness: Harness,
                                                          tmp_path: Path) -> None:
        reg = self._three_events(harness, tmp_path)
        last = harness.tamper.events()[-1]
        harness.tamper.append(forged_rollback(last, "staging", 1, 2, new_key()))
        with pytest.raises(RegistryTampered, match=r"event #4 .*signature INVALID.*signed by"):
            reg.state()

    def test_a_rollback_the_history_does_not_allow_fails_even_if_signed(
            self, harness: Harness, tmp_path: Path) -> None:
        # A holder of the key who writes an inconsistent event is caught too.
        reg = self._three_events(harness, tmp_path)
        last = harness.tamper.events()[-1]
        harness.tamper.append(forged_rollback(last, "production", 1, 2, harness.key))
        with pytest.raises(RegistryTampered, match=r"event #4 .*rolls production back v2 -> "
                                                   r"v1, but production held v1"):
            reg.state()

    def test_a_dropped_event_fails(self, harness: Harness, tmp_path: Path) -> None:
        reg = self._three_events(harness, tmp_path)
        events = harness.tamper.events()
        harness.tamper.rewrite_all([events[0], events[2]])
        with pytest.raises(RegistryTampered, match=r"event #2 .*says it is event #3"):
            reg.state()

    def test_reordered_events_fail(self, harness: Harness, tmp_path: Path) -> None:
        reg = self._three_events(harness, tmp_path)
        events = harness.tamper.events()
        harness.tamper.rewrite_all([events[0], events[2], events[1]])
        with pytest.raises(RegistryTampered, match=r"event #2 .*inserted, dropped or reordered"):
            reg.state()

    def test_an_inserted_event_fails(self, harness: Harness, tmp_path: Path) -> None:
        reg = self._three_events(harness, tmp_path)
        events = harness.tamper.events()
        # A genuine signed event, replayed at another place in the chain.
        harness.tamper.rewrite_all([events[0], events[0], events[1], events[2]])
        with pytest.raises(RegistryTampered, match=r"event #2 .*says it is event #1"):
            reg.state()

    def test_an_event_of_another_project_fails(self, harness: Harness, tmp_path: Path) -> None:
        harness.registry(project="other").promote(
            promotion(model_dir(tmp_path / "m", "1"), "staging"))
        with pytest.raises(RegistryTampered, match="belongs to project 'other'"):
            harness.registry().state()

    def test_dropping_the_tail_is_caught_against_the_recorded_head(
            self, harness: Harness, tmp_path: Path) -> None:
        reg = self._three_events(harness, tmp_path)
        head = reg.state().head
        assert head is not None
        harness.tamper.remove(3)
        history, state = verify_history(reg, head)
        assert state is not None and len(state.history) == 2    # a valid, shorter chain
        assert not history.ok
        assert "DROPPED" in history.failures[0].detail
        assert verify_history(reg, state.head)[0].ok

    def test_a_tampered_blob_fails_verification(self, harness: Harness, tmp_path: Path) -> None:
        reg = harness.registry()
        reg.promote(promotion(model_dir(tmp_path / "m", "1"), "staging"))
        state = reg.state()
        sha = state.versions[1].files["model.onnx"]
        harness.tamper.corrupt_blob(sha, 1, "model.onnx")
        result = verify_entry(harness.registry(), state, state.history[0])
        assert not result.ok
        assert any(c.name == "model file model.onnx" and
                   ("TAMPERED" in c.detail or "MISSING" in c.detail) for c in result.failures)

    # ------------------------------------------------------------- concurrency

    def test_two_racing_promotions_end_with_one_winner(self, harness: Harness,
                                                       tmp_path: Path) -> None:
        outs = [model_dir(tmp_path / f"r{i}", f"r{i}") for i in range(2)]
        start = threading.Barrier(2)

        def go(out: Path) -> int:
            reg = harness.registry()
            start.wait()
            return reg.promote(promotion(out, "staging")).seq

        with ThreadPoolExecutor(2) as pool:
            seqs = sorted(pool.map(go, outs))
        assert seqs == [1, 2]
        state = harness.registry().state()
        assert [e.previous for e in state.history] == [None, state.history[0].version]
        assert state.current("staging").version == state.history[1].version  # type: ignore

    def test_twenty_concurrent_promotions_lose_nothing(self, harness: Harness,
                                                       tmp_path: Path) -> None:
        outs = [model_dir(tmp_path / f"c{i}", f"c{i}") for i in range(20)]

        def go(i: int) -> int:
            return harness.registry().promote(promotion(outs[i], "staging",
                                                        user=f"u{i}")).seq

        with ThreadPoolExecutor(20) as pool:
            seqs = sorted(pool.map(go, range(20)))
        assert seqs == list(range(1, 21))
        state = harness.registry().state()
        assert len(state.versions) == 20 and len(state.history) == 20
        assert {e.user for e in state.history} == {f"u{i}" for i in range(20)}
        assert state.history[0].previous is None
        for before, after in zip(state.history, state.history[1:], strict=False):
            assert after.previous == before.version
        assert verify_history(harness.registry())[0].ok

