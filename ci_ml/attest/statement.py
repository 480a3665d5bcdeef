"""The in-toto Statement v1 of a promotion: what was promoted, on what evidence, and why.

Subjects are the model's files with their sha256 (ONNX, external data, weights,
model card). The predicate binds them to the data hashes, the metrics, the
findings summary, the waivers in force, the policy's hash, the gate decision, the
git commit and whether the promotion was forced (and the reason given).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ci_ml
from ci_ml.attest import dsse
from ci_ml.attest.interface import PAYLOAD_TYPE, PREDICATE_TYPE, STATEMENT_TYPE, Signer
from ci_ml.errors import InputError
from ci_ml.registry.interface import HistoryEntry, VersionRecord


def git_state(root: Path) -> dict[str, Any]:
    """The commit the project is at, and whether the work tree has uncommitted changes."""
    def git(*args: str) -> str | None:
        try:
            proc = subprocess.run(["git", "-C", str(root), *args], capture_output=True,
                                  text=True, timeout=20, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return proc.stdout.strip() if proc.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def build_statement(entry: HistoryEntry, version: VersionRecord, *,
                    context: Mapping[str, Any]) -> dict[str, Any]:
    """``context`` carries what the promotion read: findings, waivers, policy, decision, git."""
    subjects = [{"name": name, "digest": {"sha256": sha}}
                for name, sha in sorted(version.files.items())]
    predicate = {
        "action": entry.action.value,
        "stage": entry.stage,
        "version": version.version,
        "previous_version": entry.previous,
        "history_seq": entry.seq,
        "model_digest": version.digest,
        "data": dict(version.data),
        "metrics": dict(version.metrics),
        "findings": context.get("findings"),
        "waivers": list(context.get("waivers", ())),
        "policy": context.get("policy"),
        "decision": context.get("decision"),
        "forced": entry.forced,
        "reason": entry.reason,
        "git": context.get("git"),
        "evidence": dict(entry.evidence),
        "promoted_by": entry.user,
        "promoted_at": entry.at,
        "ci_ml_version": ci_ml.__version__,
    }
    return {"_type": STATEMENT_TYPE, "subject": subjects, "predicateType": PREDICATE_TYPE,
            "predicate": predicate}


def envelope_for(statement: Mapping[str, Any], signer: Signer | None) -> dsse.Envelope:
    payload = json.dumps(statement, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return dsse.sign(PAYLOAD_TYPE, payload, [signer] if signer else [])


def read_statement(envelope: dsse.Envelope) -> dict[str, Any]:
    if envelope.payload_type != PAYLOAD_TYPE:
        raise InputError(f"envelope payloadType is {envelope.payload_type!r}, "
                         f"expected {PAYLOAD_TYPE!r}")
    try:
        statement = json.loads(envelope.payload)
    except ValueError as exc:
        raise InputError("envelope payload is not JSON") from exc
    if not isinstance(statement, dict) or statement.get("_type") != STATEMENT_TYPE:
        raise InputError(f"payload is not an in-toto Statement v1 ({STATEMENT_TYPE})")
    if statement.get("predicateType") != PREDICATE_TYPE:
        raise InputError(f"predicateType is {statement.get('predicateType')!r}, "
                         f"expected {PREDICATE_TYPE!r}")
    return statement
