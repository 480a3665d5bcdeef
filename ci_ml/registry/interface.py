"""The model registry: versions identified by content, stages with full history.

A version is one model identity (the sha256 of its ONNX file, ONNX external data
and safetensors weights). A stage (``staging``, ``production``) holds a stack of
promotions: ``promote`` pushes, ``rollback`` pops, and the stage's current
version is the top. Every change is a history entry; nothing is ever deleted,
so the history answers "what was in production on that day, and why".
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ci_ml.artifacts import CANDIDATE_CARD, CANDIDATE_ONNX, CANDIDATE_ONNX_DATA, TRAINED_WEIGHTS
from ci_ml.errors import InputError
from ci_ml.fsutil import hash_json, sha256_file

STAGES = ("staging", "production")
# The stage a model must have passed before it may enter each stage.
PREVIOUS_STAGE: Mapping[str, str | None] = {"staging": None, "production": "staging"}

# Where the model files live in a pipeline's out dir, and their names in the registry.
# ``identity`` files define the model digest (the contract with the gate); the model
# card rides along so a registry version can be served on its own.
IDENTITY_FILES: Mapping[str, str] = {
    "model.onnx": CANDIDATE_ONNX,
    "model.onnx.data": CANDIDATE_ONNX_DATA,
    "model.safetensors": TRAINED_WEIGHTS,
}
OPTIONAL_FILES = frozenset({"model.onnx.data"})
CARD_FILES: Mapping[str, str] = {"model.json": CANDIDATE_CARD}


class RegistryError(InputError):
    """The registry is unreadable, inconsistent, or asked for something it does not hold."""


class Action(enum.Enum):
    PROMOTE = "promote"
    ROLLBACK = "rollback"


@dataclass(frozen=True)
class ModelIdentity:
    """A model's files (registry name -> sha256) and the digest over the identity files."""

    files: Mapping[str, str]

    @property
    def digest(self) -> str:
        ident = {k: v for k, v in sorted(self.files.items()) if k in IDENTITY_FILES}
        return "sha256:" + hash_json(ident)

    @property
    def short(self) -> str:
        return self.digest.removeprefix("sha256:")[:12]

    @classmethod
    def from_out_dir(cls, out_dir: Path) -> ModelIdentity:
        """Hash the model files of a pipeline run; raises InputError if one is missing."""
        files = {}
        for name, rel in {**IDENTITY_FILES, **CARD_FILES}.items():
            path = out_dir / rel
            if path.is_file():
                files[name] = sha256_file(path)
            elif name not in OPTIONAL_FILES and name in IDENTITY_FILES:
                raise InputError(f"{path}: model file not found (run `ci-ml train` and "
                                 "`ci-ml prune` with this --out first)")
        return cls(files)

    @classmethod
    def try_from_out_dir(cls, out_dir: Path) -> ModelIdentity | None:
        try:
            return cls.from_out_dir(out_dir)
        except InputError:
            return None

    @staticmethod
    def source_paths(out_dir: Path) -> dict[str, Path]:
        every = {**IDENTITY_FILES, **CARD_FILES}
        return {name: out_dir / rel for name, rel in every.items() if (out_dir / rel).is_file()}


@dataclass(frozen=True)
class VersionRecord:
    version: int
    digest: str
    files: Mapping[str, str]                 # registry name -> sha256 (blobs)
    metrics: Mapping[str, Any]               # scalar metrics of metrics.json
    data: Mapping[str, str]                  # split -> sha256 of the data file
    created_at: str
    created_by: str

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "digest": self.digest, "files": dict(self.files),
                "metrics": dict(self.metrics), "data": dict(self.data),
                "created_at": self.created_at, "created_by": self.created_by}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> VersionRecord:
        return cls(int(d["version"]), str(d["digest"]), dict(d["files"]), dict(d["metrics"]),
                   dict(d.get("data", {})), str(d["created_at"]), str(d["created_by"]))


@dataclass(frozen=True)
class AttestationRef:
    path: str        # relative to the registry root
    sha256: str      # of the envelope file, so an unsigned attestation is tamper-evident too
    signed: bool
    keyid: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "signed": self.signed,
                "keyid": self.keyid}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> AttestationRef:
        return cls(str(d["path"]), str(d["sha256"]), bool(d["signed"]), d.get("keyid"))


@dataclass(frozen=True)
class HistoryEntry:
    seq: int
    at: str
    user: str
    action: Action
    stage: str
    version: int
    previous: int | None
    forced: bool = False
    reason: str | None = None
    gate: Mapping[str, Any] = field(default_factory=dict)      # decision outcome + hashes
    evidence: Mapping[str, str] = field(default_factory=dict)  # artifact name -> blob sha256
    attestation: AttestationRef | None = None

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "at": self.at, "user": self.user, "action": self.action.value,
                "stage": self.stage, "version": self.version, "previous": self.previous,
                "forced": self.forced, "reason": self.reason, "gate": dict(self.gate),
                "evidence": dict(self.evidence),
                "attestation": self.attestation.to_json() if self.attestation else None}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> HistoryEntry:
        att = d.get("attestation")
        return cls(int(d["seq"]), str(d["at"]), str(d["user"]), Action(d["action"]),
                   str(d["stage"]), int(d["version"]),
                   None if d.get("previous") is None else int(d["previous"]),
                   bool(d.get("forced", False)), d.get("reason"), dict(d.get("gate", {})),
                   dict(d.get("evidence", {})),
                   AttestationRef.from_json(att) if att else None)


@dataclass(frozen=True)
class StageState:
    """A stage's promotion stack (history entries, oldest first); the top is current."""

    stage: str
    stack: tuple[HistoryEntry, ...] = ()

    @property
    def current(self) -> HistoryEntry | None:
        return self.stack[-1] if self.stack else None

    @property
    def previous(self) -> HistoryEntry | None:
        return self.stack[-2] if len(self.stack) > 1 else None


@dataclass(frozen=True)
class RegistryState:
    versions: Mapping[int, VersionRecord]
    history: tuple[HistoryEntry, ...]

    def stage(self, name: str) -> StageState:
        stack: list[HistoryEntry] = []
        for entry in self.history:
            if entry.stage != name:
                continue
            if entry.action is Action.PROMOTE:
                stack.append(entry)
            elif stack:
                stack.pop()
        return StageState(name, tuple(stack))

    def current(self, stage: str) -> VersionRecord | None:
        top = self.stage(stage).current
        return self.versions[top.version] if top else None

    def by_digest(self, digest: str) -> VersionRecord | None:
        return next((v for v in self.versions.values() if v.digest == digest), None)

    def version(self, number: int) -> VersionRecord:
        if number not in self.versions:
            known = ", ".join(f"v{n}" for n in sorted(self.versions)) or "none"
            raise RegistryError(f"no version v{number} in the registry (versions: {known})")
        return self.versions[number]

    def passed(self, stage: str) -> frozenset[str]:
        """Digests a stage holds through a gated (not forced) promotion, not rolled back."""
        return frozenset(self.versions[e.version].digest
                         for e in self.stage(stage).stack if not e.forced)

    def stages_of(self, number: int) -> tuple[str, ...]:
        return tuple(s for s in STAGES if (top := self.stage(s).current) and
                     top.version == number)

    def to_json(self) -> dict[str, Any]:
        return {"format": 1,
                "versions": [self.versions[n].to_json() for n in sorted(self.versions)],
                "history": [e.to_json() for e in self.history]}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> RegistryState:
        versions = {int(v["version"]): VersionRecord.from_json(v) for v in d.get("versions", ())}
        history = tuple(HistoryEntry.from_json(e) for e in d.get("history", ()))
        return cls(versions, history)


EMPTY_STATE = RegistryState({}, ())


@dataclass(frozen=True)
class Promotion:
    """Everything ``promote`` records about one promotion, gathered before the lock is taken."""

    stage: str
    identity: ModelIdentity
    sources: Mapping[str, Path]              # registry file name -> file to copy in
    metrics: Mapping[str, Any]
    data: Mapping[str, str]
    evidence: Mapping[str, Path]             # artifact name -> file stored as an evidence blob
    gate: Mapping[str, Any]
    forced: bool
    reason: str | None
    user: str


# Builds the attestation of a promotion while the registry lock is held: given the new
# history entry (without its attestation) and the version, returns the envelope bytes and
# the id of the key that signed it (None when unsigned).
AttestFn = Callable[["HistoryEntry", "VersionRecord"], tuple[bytes, str | None]]


class Registry(ABC):
    """A model registry backend. Writes are atomic and serialized; reads see a snapshot."""

    @property
    @abstractmethod
    def location(self) -> str:
        """Where the registry lives, for messages."""

    @abstractmethod
    def state(self) -> RegistryState: ...

    @abstractmethod
    def state_digest(self) -> str:
        """A hash of the registry's state, for cache keys of steps that read it."""

    @abstractmethod
    def promote(self, promotion: Promotion, attest: AttestFn) -> HistoryEntry: ...

    @abstractmethod
    def rollback(self, stage: str, user: str, reason: str | None) -> HistoryEntry: ...

    @abstractmethod
    def blob_path(self, sha256: str) -> Path: ...

    @abstractmethod
    def read_attestation(self, ref: AttestationRef) -> bytes: ...
