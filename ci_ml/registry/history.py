"""The registry the gate, promote, rollback and verify use, on top of any backend.

Reads verify the whole chain and derive the state from it (``chain.derive``). Writes
store the blobs first (outside the lock: content-addressed, racing writers agree), then
take the backend's lock, read and verify the chain again, decide, sign the new event
(linked to the head they verified) and append it. A writer never appends to a chain
it could not verify, so one bad event blocks every promotion after it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ci_ml.attest.statement import build_statement, envelope_for
from ci_ml.errors import BlockedError
from ci_ml.fsutil import hash_json, sha256_bytes, sha256_file
from ci_ml.registry.chain import derive
from ci_ml.registry.interface import (
    Action,
    AttestationRef,
    BlobRef,
    HistoryEntry,
    NewEvent,
    Promotion,
    RegistryBackend,
    RegistryError,
    RegistryState,
    Upload,
    VersionRecord,
)
from ci_ml.registry.trust import Trust


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Registry:
    def __init__(self, backend: RegistryBackend, trust: Trust) -> None:
        self.backend = backend
        self.trust = trust

    @property
    def location(self) -> str:
        return self.backend.location

    # ------------------------------------------------------------------ reading

    def state(self) -> RegistryState:
        """The verified history's state; raises RegistryTampered at the first bad event."""
        return derive(self.backend.read_events(), self.trust)

    def state_digest(self) -> str:
        """Changes with any stored event and with the trusted key (cache keys of the gate)."""
        keyid = self.trust.verifier.keyid if self.trust.verifier else None
        return hash_json({"head": self.backend.head(), "key": keyid, "mode": self.trust.mode})

    def fetch(self, ref: BlobRef) -> Path:
        return self.backend.fetch(ref)

    # ------------------------------------------------------------------ writing

    def _append(self, state: RegistryState, entry: HistoryEntry, record: VersionRecord,
                context: Mapping[str, Any], staged: object | None) -> HistoryEntry:
        statement = build_statement(entry, record, project=self.trust.project or "",
                                    context=context)
        signer = self.trust.signer
        envelope = envelope_for(statement, signer).to_bytes()
        new_version = record.version not in state.versions
        location = self.backend.write_event(NewEvent(envelope, entry, record, new_version),
                                            staged)
        entry = replace(entry, attestation=AttestationRef(
            location, sha256_bytes(envelope), signer is not None,
            signer.keyid if signer else None))
        self.backend.publish(RegistryState({**state.versions, record.version: record},
                                           (*state.history, entry), entry.attestation.sha256
                                           if entry.attestation else None, state.signing))
        return entry

    def promote(self, promotion: Promotion) -> HistoryEntry:
        """Append a promotion; refuses (BlockedError) unless admitted or forced."""
        self.trust.check_writer()
        identity = promotion.identity
        upload = Upload(
            identity.digest,
            {name: (path, identity.files[name]) for name, path in promotion.sources.items()},
            {name: (path, sha256_file(path)) for name, path in promotion.evidence.items()})
        staged = self.backend.upload(upload)
        with self.backend.lock():
            state = self.state()
            problems = list(promotion.problems)
            required = promotion.requires
            if required and identity.digest not in state.passed(required):
                problems.append(f"model {identity.short} does not hold {required} through a "
                                f"gated promotion in the registry's verified history")
            if problems and not promotion.force:
                raise BlockedError(f"promotion to {promotion.stage} refused: {problems[0]}",
                                   hint="pass --force --reason TEXT to override (recorded)")
            record = state.by_digest(identity.digest) or VersionRecord(
                version=max(state.versions, default=0) + 1, digest=identity.digest,
                files=dict(identity.files), metrics=dict(promotion.metrics),
                data=dict(promotion.data), created_at=utc_now(), created_by=promotion.user)
            top = state.stage(promotion.stage).current
            entry = HistoryEntry(
                seq=len(state.history) + 1, at=utc_now(), user=promotion.user,
                action=Action.PROMOTE, stage=promotion.stage, version=record.version,
                previous=top.version if top else None, forced=bool(problems),
                reason=promotion.reason, gate={**promotion.gate, "problems": problems},
                evidence={name: sha for name, (_, sha) in upload.evidence.items()},
                parent=state.head)
            return self._append(state, entry, record, promotion.context, staged)

    def rollback(self, stage: str, user: str, reason: str | None) -> HistoryEntry:
        self.trust.check_writer()
        with self.backend.lock():
            state = self.state()
            st = state.stage(stage)
            if st.current is None:
                raise RegistryError(f"nothing to roll back: no model in {stage}")
            if st.previous is None:
                raise RegistryError(f"nothing to roll back to: v{st.current.version} is the "
                                    f"only version {stage} has held since its last rollback")
            entry = HistoryEntry(
                seq=len(state.history) + 1, at=utc_now(), user=user, action=Action.ROLLBACK,
                stage=stage, version=st.previous.version, previous=st.current.version,
                reason=reason, parent=state.head)
            return self._append(state, entry, state.version(entry.version), {}, None)
