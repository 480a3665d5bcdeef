"""``ci-ml verify``: is what the registry holds what was attested, and signed by whom we trust?

For one promotion: the envelope file is byte-identical to the one recorded at
promotion time; its signature verifies with the trusted public key (when the
promotion was signed or a key is given); the statement names the registry's
version, stage and model digest; and every model file and evidence blob still
hashes to the attested sha256.
"""

from __future__ import annotations

from ci_ml.attest import dsse
from ci_ml.attest.interface import Check, CheckStatus, Verification, Verifier
from ci_ml.attest.statement import read_statement
from ci_ml.errors import InputError
from ci_ml.fsutil import sha256_bytes, sha256_file
from ci_ml.registry.interface import (
    STAGES,
    Action,
    HistoryEntry,
    Registry,
    RegistryError,
    RegistryState,
)

OK, FAIL, SKIPPED = CheckStatus.OK, CheckStatus.FAIL, CheckStatus.SKIPPED


def verify_entry(registry: Registry, state: RegistryState, entry: HistoryEntry,
                 verifier: Verifier | None) -> Verification:
    version = state.version(entry.version)
    target = f"{entry.stage} v{version.version} (promotion #{entry.seq})"
    checks: list[Check] = []
    ref = entry.attestation
    if ref is None:
        return Verification(target, (Check("attestation", FAIL,
                                           "this promotion has no attestation"),))
    try:
        raw = registry.read_attestation(ref)
    except RegistryError as exc:
        return Verification(target, (Check("attestation", FAIL, exc.message),))
    got = sha256_bytes(raw)
    checks.append(Check("attestation file", OK if got == ref.sha256 else FAIL,
                        f"{ref.path} unchanged since promotion" if got == ref.sha256 else
                        f"TAMPERED: {ref.path} hashes to {got[:12]}, the registry recorded "
                        f"{ref.sha256[:12]} at promotion"))
    try:
        envelope = dsse.Envelope.from_bytes(raw)
        statement = read_statement(envelope)
    except InputError as exc:
        checks.append(Check("statement", FAIL, f"{ref.path}: {exc.message}"))
        return Verification(target, tuple(checks))
    checks.append(_signature_check(envelope, ref.signed, verifier))

    predicate = statement.get("predicate") or {}
    claimed = {"stage": entry.stage, "version": version.version,
               "model_digest": version.digest}
    wrong = [f"{k}: attested {predicate.get(k)!r}, registry has {v!r}"
             for k, v in claimed.items() if predicate.get(k) != v]
    checks.append(Check("statement", FAIL if wrong else OK,
                        "; ".join(wrong) if wrong else
                        f"names {entry.stage} v{version.version} {version.digest[:19]}"))

    subjects = {str(s.get("name")): str((s.get("digest") or {}).get("sha256"))
                for s in statement.get("subject", ()) if isinstance(s, dict)}
    if subjects != dict(version.files):
        checks.append(Check("subjects", FAIL,
                            "attested files differ from the registry's record of v"
                            f"{version.version}: {sorted(subjects)} vs {sorted(version.files)}"))
    for name, sha in sorted(subjects.items()):
        checks.append(_blob_check(registry, f"model file {name}", name, sha))
    attested_evidence = predicate.get("evidence") or {}
    for name, sha in sorted(attested_evidence.items()):
        checks.append(_blob_check(registry, f"evidence {name}", str(name), str(sha)))
    if dict(attested_evidence) != dict(entry.evidence):
        checks.append(Check("evidence", FAIL, "attested evidence differs from the history "
                                              "entry's record"))
    return Verification(target, tuple(checks))


def _signature_check(envelope: dsse.Envelope, recorded_signed: bool,
                     verifier: Verifier | None) -> Check:
    signed = bool(envelope.signatures)
    if signed != recorded_signed:
        return Check("signature", FAIL, "TAMPERED: the registry recorded this promotion as "
                     f"{'signed' if recorded_signed else 'unsigned'}, the envelope is "
                     f"{'signed' if signed else 'unsigned'}")
    if verifier is None:
        if signed:
            keyids = ", ".join(s.keyid for s in envelope.signatures)
            return Check("signature", SKIPPED, f"signed by {keyids} but NOT checked: no public "
                         "key (pass --key, or set registry.verify_key)")
        return Check("signature", SKIPPED, "unsigned promotion (no signing key was configured)")
    if not signed:
        return Check("signature", FAIL, f"unsigned, but a key ({verifier.keyid}) was given: "
                     "expected a signature")
    if dsse.verify(envelope, verifier):
        return Check("signature", OK, f"valid ed25519 signature by {verifier.keyid}")
    keyids = ", ".join(s.keyid for s in envelope.signatures)
    return Check("signature", FAIL, f"INVALID: no valid signature by {verifier.keyid} "
                 f"(envelope signed by {keyids}); the attestation was altered or signed by "
                 "another key")


def _blob_check(registry: Registry, label: str, name: str, sha: str) -> Check:
    path = registry.blob_path(sha)
    if not path.is_file():
        return Check(label, FAIL, f"MISSING: {name} (blob {sha[:12]}) is not in the registry")
    got = sha256_file(path)
    if got != sha:
        return Check(label, FAIL, f"TAMPERED: {name} hashes to {got[:12]}, attested {sha[:12]}")
    return Check(label, OK, f"{name} sha256 {sha[:12]} matches")


def select_entries(state: RegistryState, stage: str | None,
                   version: int | None) -> list[HistoryEntry]:
    """The promotions to verify: a stage's current one, every promotion of a version, or
    (neither given) the current promotion of every stage."""
    if stage is not None:
        top = state.stage(stage).current
        if top is None:
            raise RegistryError(f"no model in {stage}: nothing to verify")
        return [top]
    if version is not None:
        state.version(version)
        entries = [e for e in state.history if e.action is Action.PROMOTE and e.version == version]
        if not entries:
            raise RegistryError(f"v{version} was never promoted: nothing to verify")
        return entries
    entries = [top for s in STAGES if (top := state.stage(s).current) is not None]
    if not entries:
        raise RegistryError("the registry holds no promoted model: nothing to verify")
    return entries


def verify_registry(registry: Registry, stage: str | None, version: int | None,
                    verifier: Verifier | None) -> list[Verification]:
    state = registry.state()
    return [verify_entry(registry, state, e, verifier)
            for e in select_entries(state, stage, version)]
