"""Value types of the model registry: versions identified by content, stages with history.

A version is one model identity (the sha256 over its ONNX file, ONNX external data
and model card). A stage (``staging``, ``production``) holds a stack of promotions:
``promote`` pushes, ``rollback`` pops, and the stage's current version is the top.

Every change is an *event*: an in-toto statement in a DSSE envelope that names its
sequence number and the sha256 of the event before it. The history is that hash-linked
chain and nothing else: versions, stages, forced flags and reasons are all derived from
the (verified) statements, never from a mutable index. A backend
(``RegistryBackend``) only stores and lists the envelopes and the blobs they name;
``ci_ml.registry.history.Registry`` verifies, derives and writes on top of any backend.
"""

from __future__ import annotations

import enum
import shutil
import tempfile
import weakref
from abc import ABC, abstractmethod
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ci_ml.artifacts import (
    CANDIDATE_CARD,
    CANDIDATE_ONNX,
    CANDIDATE_ONNX_DATA,
    TRAINED_WEIGHTS,
)
from ci_ml.errors import BlockedError, InputError
from ci_ml.fsutil import hash_json, sha256_bytes, sha256_file

STAGES = ("staging", "production")
# The stage a model must have passed before it may enter each stage.
PREVIOUS_STAGE: Mapping[str, str | None] = {"staging": None, "production": "staging"}

# Where the model files live in a pipeline's out dir, and their names in the registry.
# The ``identity`` files define the model digest (the contract with the gate): the
# candidate's ONNX graph (+ external data) and its card, whatever trained it. The
# safetensors weights of ci-ml's own training ride along when present.
IDENTITY_FILES: Mapping[str, str] = {
    "model.onnx": CANDIDATE_ONNX,
    "model.onnx.data": CANDIDATE_ONNX_DATA,
    "model.json": CANDIDATE_CARD,
}
EXTRA_FILES: Mapping[str, str] = {"model.safetensors": TRAINED_WEIGHTS}
OPTIONAL_FILES = frozenset({"model.onnx.data", "model.safetensors"})


class RegistryError(InputError):
    """The registry is unreadable, misconfigured, or asked for something it does not hold."""


class RegistryTampered(BlockedError):
    """The stored history fails verification: an event is unsigned, altered, inserted,
    reordered or missing (exit 1: nothing built on it may be promoted)."""


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
        for name, rel in {**IDENTITY_FILES, **EXTRA_FILES}.items():
            path = out_dir / rel
            if path.is_file():
                files[name] = sha256_file(path)
            elif name not in OPTIONAL_FILES:
                raise InputError(f"{path}: model file not found (the candidate model: run "
                                 "`ci-ml prune`, or your own training, with this --out first)")
        return cls(files)

    @classmethod
    def try_from_out_dir(cls, out_dir: Path) -> ModelIdentity | None:
        try:
            return cls.from_out_dir(out_dir)
        except InputError:
            return None

    @staticmethod
    def source_paths(out_dir: Path) -> dict[str, Path]:
        every = {**IDENTITY_FILES, **EXTRA_FILES}
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
    """Where an event's envelope is stored, and what it hashes to (the next event's link)."""

    path: str        # backend-specific: a path in the registry dir, an OCI reference, ...
    sha256: str      # of the envelope bytes
    signed: bool
    keyid: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "signed": self.signed,
                "keyid": self.keyid}


@dataclass(frozen=True)
class HistoryEntry:
    """One event of the history, as its statement says (every field is signed)."""

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
    parent: str | None = None                                  # sha256 of the event before
    attestation: AttestationRef | None = None

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "at": self.at, "user": self.user, "action": self.action.value,
                "stage": self.stage, "version": self.version, "previous": self.previous,
                "forced": self.forced, "reason": self.reason, "gate": dict(self.gate),
                "evidence": dict(self.evidence), "parent": self.parent,
                "attestation": self.attestation.to_json() if self.attestation else None}


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
    head: str | None = None          # sha256 of the last event's envelope
    signing: str = "required"        # "required", or "off" (unsigned events accepted)
    signers: tuple[str, ...] = ()    # key ids that signed the events

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

    @property
    def unsigned(self) -> int:
        return sum(1 for e in self.history if e.attestation and not e.attestation.signed)

    def to_json(self) -> dict[str, Any]:
        return {"format": 2, "head": self.head, "signing": self.signing,
                "signers": list(self.signers),
                "stages": {s: (top.version if (top := self.stage(s).current) else None)
                           for s in STAGES},
                "versions": [self.versions[n].to_json() for n in sorted(self.versions)],
                "history": [e.to_json() for e in self.history]}


EMPTY_STATE = RegistryState({}, ())


@dataclass(frozen=True)
class Promotion:
    """Everything ``promote`` records about one promotion, gathered before the lock is taken.

    ``problems`` are why the gate's decision does not admit the model; the registry adds
    its own (the stage before was not passed) from its verified history, and refuses
    unless ``force`` was asked for, in which case the event is recorded as forced."""

    stage: str
    identity: ModelIdentity
    sources: Mapping[str, Path]              # registry file name -> file to copy in
    metrics: Mapping[str, Any]
    data: Mapping[str, str]
    evidence: Mapping[str, Path]             # artifact name -> file stored as an evidence blob
    gate: Mapping[str, Any]
    problems: tuple[str, ...]
    force: bool
    reason: str | None
    user: str
    requires: str | None = None              # the stage the model must hold through a gate
    context: Mapping[str, Any] = field(default_factory=dict)  # findings, waivers, policy...


@dataclass(frozen=True)
class StoredEvent:
    """An event's envelope as a backend stores it, in sequence order."""

    location: str
    envelope: bytes


@dataclass(frozen=True)
class BlobRef:
    """A file the history names: a model file of a version, or evidence of an event."""

    sha256: str
    name: str
    version: int
    seq: int | None = None      # set for evidence (the event that stored it)

    @property
    def kind(self) -> str:
        return "model file" if self.seq is None else "evidence"


@dataclass(frozen=True)
class Upload:
    """What a promotion stores before it takes the lock (content-addressed, so idempotent)."""

    digest: str
    files: Mapping[str, tuple[Path, str]]      # model files: registry name -> (path, sha256)
    evidence: Mapping[str, tuple[Path, str]]   # artifact name -> (path, sha256)


@dataclass(frozen=True)
class NewEvent:
    """An event to append: its signed envelope and what it asserts (for the backend's
    own bookkeeping: tags, model versions, referrers)."""

    envelope: bytes
    entry: HistoryEntry
    version: VersionRecord
    new_version: bool

    @property
    def seq(self) -> int:
        return self.entry.seq


class RegistryBackend(ABC):
    """Where a registry keeps its history: the event envelopes in sequence order, the
    blobs they name (model files, evidence), and a lock that serializes writers.

    A backend never decides anything: it stores bytes. Appends happen only under
    ``lock()``, after the caller has read and verified the whole chain, so a backend
    needs mutual exclusion, not compare-and-swap. Every backend passes the conformance
    suite in ``tests/registry/conformance.py``."""

    name: ClassVar[str]

    @property
    @abstractmethod
    def location(self) -> str:
        """Where the registry lives, for messages (never with credentials)."""

    @abstractmethod
    def lock(self) -> AbstractContextManager[None]:
        """Exclusive among all writers of this registry; raises ToolError on timeout."""

    @abstractmethod
    def read_events(self) -> list[StoredEvent]:
        """Every stored event envelope, in sequence order (event 1 first)."""

    @abstractmethod
    def upload(self, upload: Upload) -> object:
        """Store a promotion's blobs; returns a handle ``write_event`` receives."""

    @abstractmethod
    def write_event(self, event: NewEvent, staged: object | None) -> str:
        """Append event ``event.seq`` (under the lock); returns where it is stored."""

    @abstractmethod
    def fetch(self, ref: BlobRef) -> Path:
        """A local, readable copy of a blob the history names; RegistryError if missing."""

    def publish(self, state: RegistryState) -> None:
        """Point the backend's own stage markers (tags, aliases) at ``state``'s stages.

        Called under the lock after each append. The markers are a convenience for other
        tools: ci-ml never reads them back as truth. The local backend has none."""
        return None

    def head(self) -> str:
        """Changes whenever any stored event changes (for cache keys of steps that read it)."""
        return hash_json([sha256_bytes(e.envelope) for e in self.read_events()])

    _scratch_dir: Path | None = None

    def scratch(self) -> Path:
        """A private directory for downloaded copies, removed by ``close``."""
        if self._scratch_dir is None:
            self._scratch_dir = Path(tempfile.mkdtemp(prefix=f"ci-ml-{self.name}-"))
            # Removed with the backend (or at exit) even when nobody calls close().
            weakref.finalize(self, shutil.rmtree, self._scratch_dir, True)
        return self._scratch_dir

    def close(self) -> None:
        """Release downloaded copies."""
        if self._scratch_dir is not None:
            shutil.rmtree(self._scratch_dir, ignore_errors=True)
            self._scratch_dir = None
