"""``ci-ml verify``: is the registry's history intact, signed by the key we trust, and does
what it stores still hash to what was attested?

Two levels. The *history*: every event of the chain, from the first to the head, is
checked (signature, sequence, link to the event before, a move the history allows;
see ``ci_ml.registry.chain``), and optionally that the chain still reaches a head
recorded earlier (``--head``: dropping events from the end leaves a valid but shorter
chain). The *files*: for the promotions selected (by default what each stage holds
now), every model file and evidence blob is fetched from the backend and hashed.
"""

from __future__ import annotations

from ci_ml.attest.interface import Check, CheckStatus, Verification
from ci_ml.errors import CiMlError
from ci_ml.fsutil import sha256_file
from ci_ml.registry.history import Registry
from ci_ml.registry.interface import (
    STAGES,
    Action,
    BlobRef,
    HistoryEntry,
    RegistryError,
    RegistryState,
    RegistryTampered,
)

OK, FAIL, SKIPPED = CheckStatus.OK, CheckStatus.FAIL, CheckStatus.SKIPPED


def verify_history(registry: Registry, head: str | None = None) -> tuple[Verification,
                                                                        RegistryState | None]:
    """The whole chain; returns the state it derives (None when it failed)."""
    target = f"history of {registry.location}"
    try:
        state = registry.state()
    except RegistryTampered as exc:
        return Verification(target, (Check("history", FAIL, exc.message),)), None
    checks = [Check("history", OK, f"{len(state.history)} event(s), each linked to the one "
                    f"before, head {str(state.head)[:12]}" if state.history else "no events")]
    unsigned = state.unsigned
    if unsigned:
        checks.append(Check("signatures", SKIPPED, f"{unsigned} of {len(state.history)} "
                            "event(s) UNSIGNED (registry.signing: off)"))
    elif state.history:
        by = ", ".join(state.signers) or "a key not checked (no public key configured)"
        status = OK if state.signers else SKIPPED
        checks.append(Check("signatures", status, f"all {len(state.history)} event(s) signed "
                            f"by {by}"))
    if head is not None:
        known = {e.attestation.sha256 for e in state.history if e.attestation}
        wanted = head.removeprefix("sha256:").lower()
        matches = [h for h in known if h.startswith(wanted)] if len(wanted) >= 12 else []
        checks.append(Check("head", OK if matches else FAIL,
                            f"the chain contains the recorded head {wanted[:12]}" if matches
                            else f"DROPPED: the recorded head {wanted[:12]} is not in the chain "
                                 f"(events were removed from its end, or --head is wrong)"))
    return Verification(target, tuple(checks)), state


def verify_entry(registry: Registry, state: RegistryState, entry: HistoryEntry) -> Verification:
    """The files one promotion names: the version's model files and the event's evidence."""
    version = state.version(entry.version)
    target = f"{entry.stage} v{version.version} ({entry.action.value} #{entry.seq})"
    ref = entry.attestation
    signed = (f"signed by {ref.keyid}" if ref and ref.keyid else
              "signed (key not checked)" if ref and ref.signed else "UNSIGNED")
    checks = [Check("statement", OK, f"names {entry.stage} v{version.version} "
                    f"{version.digest[:19]}, {signed}")]
    for name, sha in sorted(version.files.items()):
        checks.append(_blob_check(registry, BlobRef(sha, name, version.version)))
    for name, sha in sorted(entry.evidence.items()):
        checks.append(_blob_check(registry, BlobRef(sha, name, version.version, entry.seq)))
    return Verification(target, tuple(checks))


def _blob_check(registry: Registry, ref: BlobRef) -> Check:
    label = f"{ref.kind} {ref.name}"
    try:
        path = registry.fetch(ref)
        got = sha256_file(path)
    except (CiMlError, OSError) as exc:
        detail = exc.message if isinstance(exc, CiMlError) else str(exc)
        return Check(label, FAIL, f"MISSING: {detail}")
    if got != ref.sha256:
        return Check(label, FAIL, f"TAMPERED: {ref.name} hashes to {got[:12]}, attested "
                                  f"{ref.sha256[:12]}")
    return Check(label, OK, f"{ref.name} sha256 {ref.sha256[:12]} matches")


def select_entries(state: RegistryState, stage: str | None,
                   version: int | None) -> list[HistoryEntry]:
    """The promotions whose files to check: a stage's current one, every promotion of a
    version, or (neither given) the current promotion of every stage."""
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
