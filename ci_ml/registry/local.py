"""The embedded registry backend: a plain directory, no server.

Layout::

    <root>/events/<seq:06d>.dsse.json     the history: one signed event per file, never rewritten
    <root>/blobs/sha256/<hex>             content-addressed model files and evidence (read-only)
    <root>/.lock                          fcntl.flock'ed by every writer

There is no index: the state is derived from the events. Readers never lock: an event
file appears whole (written to a temporary name, then hard-linked into place, which
also refuses to replace an existing event).
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ci_ml.errors import ToolError
from ci_ml.fsutil import sha256_file
from ci_ml.registry.interface import (
    BlobRef,
    NewEvent,
    RegistryBackend,
    RegistryError,
    StoredEvent,
    Upload,
)

EVENTS = "events"
LOCK = ".lock"
LEGACY_INDEX = "index.json"
EVENT_NAME = re.compile(r"^(\d{6,})\.dsse\.json$")


class LocalBackend(RegistryBackend):
    name = "local"

    def __init__(self, root: Path, lock_timeout_s: float = 60.0) -> None:
        self.root = root
        self.lock_timeout_s = lock_timeout_s

    @property
    def location(self) -> str:
        return str(self.root)

    @property
    def events_dir(self) -> Path:
        return self.root / EVENTS

    def blob_path(self, sha256: str) -> Path:
        return self.root / "blobs" / "sha256" / sha256

    # ------------------------------------------------------------------ reading

    def read_events(self) -> list[StoredEvent]:
        if self.root.exists() and not self.root.is_dir():
            raise RegistryError(f"registry {self.root}: exists and is not a directory")
        try:
            names = sorted((p.name for p in self.events_dir.iterdir() if EVENT_NAME.match(p.name)),
                           key=lambda n: int(n.split(".", 1)[0]))
        except FileNotFoundError:
            if (self.root / LEGACY_INDEX).is_file():
                raise RegistryError(
                    f"{self.root / LEGACY_INDEX}: a registry of an older ci-ml (an unsigned "
                    "index, no event chain); its history cannot be verified: move it aside "
                    "and promote again") from None
            return []
        except OSError as exc:
            raise RegistryError(f"{self.events_dir}: cannot list the registry's events: "
                                f"{exc.strerror}") from exc
        events = []
        for name in names:
            path = self.events_dir / name
            try:
                events.append(StoredEvent(f"{EVENTS}/{name}", path.read_bytes()))
            except OSError as exc:
                raise RegistryError(f"{path}: cannot read: {exc.strerror}") from exc
        return events

    def fetch(self, ref: BlobRef) -> Path:
        path = self.blob_path(ref.sha256)
        if not path.is_file():
            raise RegistryError(f"{ref.kind} {ref.name} (blob {ref.sha256[:12]}) is not in the "
                                "registry")
        return path

    # ------------------------------------------------------------------ writing

    @contextmanager
    def lock(self) -> Iterator[None]:
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

    def upload(self, upload: Upload) -> object:
        for src, sha in (*upload.files.values(), *upload.evidence.values()):
            self.put_blob(src, sha)
        return None

    def write_event(self, event: NewEvent, staged: object | None) -> str:
        self.events_dir.mkdir(parents=True, exist_ok=True)
        name = f"{event.seq:06d}.dsse.json"
        fd, tmp = tempfile.mkstemp(dir=self.events_dir, prefix=f".{name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(event.envelope)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o444)
            try:
                os.link(tmp, self.events_dir / name)   # never replaces an existing event
            except FileExistsError as exc:
                raise RegistryError(f"{self.events_dir / name}: event #{event.seq} exists "
                                    "already (written outside the registry lock?)") from exc
        finally:
            Path(tmp).unlink(missing_ok=True)
        return f"{EVENTS}/{name}"
