"""The embedded registry: a plain directory, no server.

Layout::

    <root>/index.json                     versions and the full history (the only mutable file)
    <root>/.lock                          fcntl.flock'ed by every writer
    <root>/blobs/sha256/<hex>             content-addressed model files and evidence
    <root>/attestations/<seq>-<stage>-v<n>.dsse.json

Writers copy blobs first (idempotent: a blob's name is its hash), then take the
lock, re-read the index, decide, write the attestation and replace the index
atomically. Readers never lock: ``os.replace`` means they see the old index or the
new one, never half of one. Concurrent promotions therefore serialize on the lock
and none is lost.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from ci_ml.errors import ToolError
from ci_ml.fsutil import atomic_write_bytes, atomic_write_json, sha256_bytes, sha256_file
from ci_ml.registry.interface import (
    EMPTY_STATE,
    STAGES,
    Action,
    AttestationRef,
    AttestFn,
    HistoryEntry,
    Promotion,
    Registry,
    RegistryError,
    RegistryState,
    VersionRecord,
)

INDEX = "index.json"
LOCK = ".lock"


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class LocalRegistry(Registry):
    def __init__(self, root: Path, lock_timeout_s: float = 60.0) -> None:
        self.root = root
        self.lock_timeout_s = lock_timeout_s

    @property
    def location(self) -> str:
        return str(self.root)

    @property
    def index_path(self) -> Path:
        return self.root / INDEX

    # ------------------------------------------------------------------ reading

    def state(self) -> RegistryState:
        try:
            text = self.index_path.read_text("utf-8")
        except FileNotFoundError:
            return EMPTY_STATE
        except (OSError, UnicodeDecodeError) as exc:
            raise RegistryError(f"{self.index_path}: cannot read the registry index: {exc}") \
                from exc
        try:
            doc = json.loads(text)
            if not isinstance(doc, dict) or doc.get("format") != 1:
                raise ValueError("not a ci-ml registry index (format 1)")
            state = RegistryState.from_json(doc)
        except (ValueError, KeyError, TypeError) as exc:
            raise RegistryError(f"{self.index_path}: registry index is corrupt: {exc}") from exc
        for entry in state.history:
            if entry.version not in state.versions or entry.stage not in STAGES:
                raise RegistryError(f"{self.index_path}: registry index is corrupt: history "
                                    f"entry {entry.seq} names unknown version/stage")
        return state

    def state_digest(self) -> str:
        """A hash of the registry's state, for cache keys of steps that read it."""
        try:
            return sha256_bytes(self.index_path.read_bytes())
        except FileNotFoundError:
            return "empty"

    def blob_path(self, sha256: str) -> Path:
        return self.root / "blobs" / "sha256" / sha256

    def read_attestation(self, ref: AttestationRef) -> bytes:
        path = (self.root / ref.path).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise RegistryError(f"attestation path {ref.path!r} leaves the registry")
        try:
            return path.read_bytes()
        except OSError as exc:
            raise RegistryError(f"{path}: attestation missing or unreadable") from exc

    # ------------------------------------------------------------------ writing

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            deadline = time.monotonic() + self.lock_timeout_s
            delay = 0.005
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                        raise
                    if time.monotonic() > deadline:
                        raise ToolError(f"{self.root}: registry is locked by another process "
                                        f"for more than {self.lock_timeout_s:.0f}s") from exc
                    time.sleep(delay)
                    delay = min(delay * 2, 0.1)
            yield
        finally:
            os.close(fd)  # closing releases the flock

    def put_blob(self, src: Path, sha256: str) -> None:
        """Store ``src`` under its hash; a blob already present and intact is left alone."""
        dest = self.blob_path(sha256)
        if dest.is_file() and sha256_file(dest) == sha256:
            return
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{sha256[:12]}.", suffix=".tmp")
        os.close(fd)
        try:
            shutil.copyfile(src, tmp)
            got = sha256_file(Path(tmp))
            if got != sha256:
                raise RegistryError(f"{src}: changed while being copied into the registry "
                                    f"(sha256 {got[:12]}, expected {sha256[:12]})")
            os.chmod(tmp, 0o444)
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _write(self, state: RegistryState) -> None:
        atomic_write_json(self.index_path, state.to_json())

    def promote(self, promotion: Promotion, attest: AttestFn) -> HistoryEntry:
        # Blobs first and outside the lock: content-addressed, so racing writers agree.
        for name, src in promotion.sources.items():
            self.put_blob(src, promotion.identity.files[name])
        evidence = {}
        for name, src in promotion.evidence.items():
            sha = sha256_file(src)
            self.put_blob(src, sha)
            evidence[name] = sha
        with self._locked():
            state = self.state()
            record = state.by_digest(promotion.identity.digest)
            if record is None:
                record = VersionRecord(
                    version=max(state.versions, default=0) + 1,
                    digest=promotion.identity.digest, files=dict(promotion.identity.files),
                    metrics=dict(promotion.metrics), data=dict(promotion.data),
                    created_at=utc_now(), created_by=promotion.user)
            top = state.stage(promotion.stage).current
            seq = len(state.history) + 1
            entry = HistoryEntry(
                seq=seq, at=utc_now(), user=promotion.user, action=Action.PROMOTE,
                stage=promotion.stage, version=record.version,
                previous=top.version if top else None, forced=promotion.forced,
                reason=promotion.reason, gate=dict(promotion.gate), evidence=evidence)
            envelope, keyid = attest(entry, record)
            rel = f"attestations/{seq:06d}-{promotion.stage}-v{record.version}.dsse.json"
            atomic_write_bytes(self.root / rel, envelope)
            entry = replace(entry, attestation=AttestationRef(rel, sha256_bytes(envelope),
                                                              keyid is not None, keyid))
            self._write(RegistryState({**state.versions, record.version: record},
                                      (*state.history, entry)))
        return entry

    def rollback(self, stage: str, user: str, reason: str | None) -> HistoryEntry:
        with self._locked():
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
                reason=reason)
            self._write(RegistryState(state.versions, (*state.history, entry)))
        return entry
