"""The in-toto Statement v1 of one registry event: what moved where, on what evidence, why.

Subjects are the model's files with their sha256 (ONNX, external data, card, and the
weights when present). The predicate holds *every* field the gate or a stage relies
on: the event's place in the history (project, sequence number, sha256 of the event
before), the action, stage, version and the version it replaced, the model digest and
its record (metrics, data hashes, who made it when), forced and reason, the gate's
decision and the evidence blobs' hashes, who and when; plus, for promotions, the
findings summary, the waivers in force, the policy hash and the git state. The
registry's history is derived from these statements alone.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ci_ml
from ci_ml.attest import dsse
from ci_ml.attest.interface import PAYLOAD_TYPE, PREDICATE_TYPE, STATEMENT_TYPE, Signer
from ci_ml.errors import InputError
from ci_ml.registry.interface import Action, HistoryEntry, VersionRecord


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


def build_statement(entry: HistoryEntry, version: VersionRecord, *, project: str,
                    context: Mapping[str, Any]) -> dict[str, Any]:
    """``context`` carries what a promotion read: findings, waivers, policy, decision, git."""
    subjects = [{"name": name, "digest": {"sha256": sha}}
                for name, sha in sorted(version.files.items())]
    predicate = {
        "registry": {"project": project, "seq": entry.seq, "parent": entry.parent},
        "action": entry.action.value,
        "stage": entry.stage,
        "version": version.version,
        "previous_version": entry.previous,
        "model_digest": version.digest,
        "created_at": version.created_at,
        "created_by": version.created_by,
        "data": dict(version.data),
        "metrics": dict(version.metrics),
        "forced": entry.forced,
        "reason": entry.reason,
        "gate": dict(entry.gate),
        "evidence": dict(entry.evidence),
        "by": entry.user,
        "at": entry.at,
        "findings": context.get("findings"),
        "waivers": list(context.get("waivers", ())),
        "policy": context.get("policy"),
        "decision": context.get("decision"),
        "git": context.get("git"),
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


@dataclass(frozen=True)
class Event:
    """A statement read back: the history entry and the version record it asserts."""

    project: str
    entry: HistoryEntry
    version: VersionRecord


def _typed(pred: Mapping[str, Any], key: str, kind: type | tuple[type, ...],
           optional: bool = False) -> Any:
    value = pred.get(key)
    if value is None and optional:
        return None
    # bool is an int in Python: never let `true` stand for a version number.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise InputError(f"statement field {key!r} is {value!r}, not a valid value")
    return value


def _str_map(value: Any, key: str) -> dict[str, str]:
    if not isinstance(value, Mapping) or not all(isinstance(k, str) and isinstance(v, str)
                                                 for k, v in value.items()):
        raise InputError(f"statement field {key!r} is not a map of names to hashes")
    return dict(value)


def parse_event(statement: Mapping[str, Any]) -> Event:
    """The event a statement asserts; raises InputError naming the first malformed field."""
    pred = statement.get("predicate")
    if not isinstance(pred, Mapping):
        raise InputError("statement has no predicate")
    reg = _typed(pred, "registry", Mapping)
    seq = _typed(reg, "seq", int)
    parent = _typed(reg, "parent", str, optional=True)
    try:
        action = Action(pred.get("action"))
    except ValueError as exc:
        raise InputError(f"statement field 'action' is {pred.get('action')!r}") from exc
    files = {}
    for subject in statement.get("subject") or ():
        if not isinstance(subject, Mapping) or not isinstance(subject.get("name"), str):
            raise InputError("statement subject without a name")
        digest = subject.get("digest")
        sha = digest.get("sha256") if isinstance(digest, Mapping) else None
        if not isinstance(sha, str):
            raise InputError(f"subject {subject['name']!r} has no sha256")
        files[subject["name"]] = sha
    number = _typed(pred, "version", int)
    version = VersionRecord(
        version=number, digest=_typed(pred, "model_digest", str), files=files,
        metrics=dict(_typed(pred, "metrics", Mapping)), data=_str_map(pred.get("data"), "data"),
        created_at=_typed(pred, "created_at", str), created_by=_typed(pred, "created_by", str))
    entry = HistoryEntry(
        seq=seq, at=_typed(pred, "at", str), user=_typed(pred, "by", str), action=action,
        stage=_typed(pred, "stage", str), version=number,
        previous=_typed(pred, "previous_version", int, optional=True),
        forced=_typed(pred, "forced", bool), reason=_typed(pred, "reason", str, optional=True),
        gate=dict(_typed(pred, "gate", Mapping)),
        evidence=_str_map(pred.get("evidence"), "evidence"), parent=parent)
    return Event(str(_typed(reg, "project", str)), entry, version)
