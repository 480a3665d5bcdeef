"""Verify the history chain and derive the registry's state from it.

Event *k* is accepted only if its envelope is a well-formed statement, signed by the
trusted key (or unsigned where signing is off), names sequence number *k*, this
project, and the sha256 of event *k-1*'s envelope as its parent, and asserts a move
the history so far allows (a new version is the next number and its digest is its
files'; a promotion's previous version is the stage's current one; a rollback pops
exactly the version the stage holds). So an unsigned, altered, inserted, reordered or
dropped event fails here, with the event and the reason named. Dropping events from
the *end* leaves a shorter valid chain: ``verify --head`` checks the chain still
reaches a known head (the one ``promote`` printed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from ci_ml.attest import dsse
from ci_ml.attest.statement import Event, parse_event, read_statement
from ci_ml.errors import InputError
from ci_ml.fsutil import sha256_bytes
from ci_ml.registry.interface import (
    STAGES,
    Action,
    AttestationRef,
    ModelIdentity,
    RegistryError,
    RegistryState,
    RegistryTampered,
    StoredEvent,
    VersionRecord,
)
from ci_ml.registry.trust import Trust


class UnverifiableRegistry(RegistryError):
    """Signatures are required but no public key is configured to check them (exit 2)."""


def _fail(seq: int, event: StoredEvent, reason: str) -> RegistryTampered:
    return RegistryTampered(f"registry history fails verification at event #{seq} "
                            f"({event.location}): {reason}")


def _signature(seq: int, event: StoredEvent, envelope: dsse.Envelope,
               trust: Trust) -> str | None:
    """The key id that signed the event (None: unsigned, allowed); raises if not acceptable."""
    if not envelope.signatures:
        if trust.required:
            raise _fail(seq, event, f"the event is UNSIGNED, and signatures are required "
                                    f"({trust.reason})")
        return None
    if trust.verifier is None:
        if trust.required:
            raise UnverifiableRegistry(
                "cannot verify the registry history: signatures are required but no public "
                "key is configured (registry.verify_key, CI_ML_VERIFY_KEY, or a signing key)")
        return envelope.signatures[0].keyid or None
    if not dsse.verify(envelope, trust.verifier):
        keyids = ", ".join(s.keyid or "?" for s in envelope.signatures)
        raise _fail(seq, event, f"signature INVALID: no valid signature by the trusted key "
                                f"{trust.verifier.keyid} (envelope signed by {keyids}); the "
                                "event was altered or signed by another key")
    return trust.verifier.keyid


def _check_move(seq: int, stored: StoredEvent, event: Event,
                versions: dict[int, VersionRecord], state: RegistryState) -> None:
    entry, record = event.entry, event.version
    if entry.stage not in STAGES:
        raise _fail(seq, stored, f"unknown stage {entry.stage!r}")
    known = versions.get(record.version)
    if known is None:
        expected = max(versions, default=0) + 1
        if entry.action is Action.ROLLBACK or record.version != expected:
            raise _fail(seq, stored, f"names v{record.version}, which the history never "
                                     f"created (next version would be v{expected})")
        if ModelIdentity(record.files).digest != record.digest:
            raise _fail(seq, stored, f"v{record.version}'s digest {record.digest[:19]} is not "
                                     "the digest of its attested files")
        if any(v.digest == record.digest for v in versions.values()):
            raise _fail(seq, stored, f"creates v{record.version} for a model the registry "
                                     "already holds")
    elif known != record:
        raise _fail(seq, stored, f"restates v{record.version} differently from the event "
                                 "that created it (files, metrics, data or author)")
    stack = state.stage(entry.stage)
    current = stack.current.version if stack.current else None
    if entry.action is Action.PROMOTE:
        if entry.previous != current:
            raise _fail(seq, stored, f"promotes over v{entry.previous} in {entry.stage}, but "
                                     f"{entry.stage} held {_v(current)}")
        return
    target = stack.previous.version if stack.previous else None
    if entry.previous != current or current is None or entry.version != target:
        raise _fail(seq, stored, f"rolls {entry.stage} back {_v(entry.previous)} -> "
                                 f"v{entry.version}, but {entry.stage} held {_v(current)} "
                                 f"(before it: {_v(target)})")


def _v(number: int | None) -> str:
    return "nothing" if number is None else f"v{number}"


def derive(events: Sequence[StoredEvent], trust: Trust) -> RegistryState:
    """The state the chain of events asserts; raises RegistryTampered at the first bad event."""
    versions: dict[int, VersionRecord] = {}
    state = RegistryState({}, (), signing=trust.mode)
    head: str | None = None
    signers: list[str] = []
    for seq, stored in enumerate(events, start=1):
        try:
            envelope = dsse.Envelope.from_bytes(stored.envelope)
            event = parse_event(read_statement(envelope))
        except InputError as exc:
            raise _fail(seq, stored, f"not a ci-ml registry event: {exc.message}") from exc
        keyid = _signature(seq, stored, envelope, trust)
        entry = event.entry
        if entry.seq != seq:
            raise _fail(seq, stored, f"the statement says it is event #{entry.seq}: events "
                                     "were inserted, dropped or reordered")
        if entry.parent != head:
            raise _fail(seq, stored, "its link to the event before does not match (parent "
                                     f"{str(entry.parent)[:12]}, event #{seq - 1} hashes to "
                                     f"{str(head)[:12]}): an event was inserted, altered, "
                                     "dropped or reordered")
        if trust.project is not None and event.project != trust.project:
            raise _fail(seq, stored, f"belongs to project {event.project!r}, not "
                                     f"{trust.project!r}")
        _check_move(seq, stored, event, versions, state)
        versions[event.version.version] = event.version
        head = sha256_bytes(stored.envelope)
        if keyid and keyid not in signers:
            signers.append(keyid)
        ref = AttestationRef(stored.location, head, bool(envelope.signatures), keyid)
        state = RegistryState(dict(versions), (*state.history, replace(entry, attestation=ref)),
                              head, trust.mode, tuple(signers))
    return state
