"""The run history: JSON lines, one per step run, in ``<cache dir>/history/``.

Each writer appends to its own file (``local.jsonl`` on a developer's machine,
``gh-<run>-<attempt>-<job>.jsonl`` or ``gl-<job id>.jsonl`` in CI), so when CI
merges the cache directories of several jobs no file overwrites another; readers
take the union of every ``*.jsonl`` and drop duplicate record ids. Within a file,
concurrent writers (parallel ``ci-ml`` runs sharing a cache) are serialized by an
exclusive ``flock`` and each line goes out in one ``write`` on an ``O_APPEND``
descriptor: lines never interleave, and a reader sees whole lines or a torn last
line from a crash, which it skips. The format is in docs/autofix.md.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
from pathlib import Path

from ci_ml.autofix.interface import History, RunRecord
from ci_ml.errors import UsageError

SUFFIX = ".jsonl"
# A line is one record; a longer one is truncated in its log tail, never split.
MAX_LINE_BYTES = 64 * 1024
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def writer_id(env: os._Environ[str] | dict[str, str] | None = None) -> str:
    """Who is writing: the CI job (so merged caches keep every job's file), else local."""
    e = os.environ if env is None else env
    if e.get("GITHUB_ACTIONS") == "true" and e.get("GITHUB_RUN_ID"):
        raw = f"gh-{e['GITHUB_RUN_ID']}-{e.get('GITHUB_RUN_ATTEMPT', '1')}-{e.get('GITHUB_JOB', '')}"
    elif e.get("GITLAB_CI") and e.get("CI_JOB_ID"):
        raw = f"gl-{e['CI_JOB_ID']}"
    else:
        raw = "local"
    return _SAFE.sub("_", raw).strip("._") or "local"


class JsonlHistory(History):
    def __init__(self, directory: Path, writer: str | None = None) -> None:
        self.directory = directory
        self.writer = writer or writer_id()
        self.skipped = 0   # unreadable lines met by the last records()

    @property
    def path(self) -> Path:
        return self.directory / f"{self.writer}{SUFFIX}"

    def append(self, record: RunRecord) -> None:
        data = record.to_json()
        line = (json.dumps(data, separators=(",", ":"), default=str) + "\n").encode()
        if len(line) > MAX_LINE_BYTES:
            excess = len(line) - MAX_LINE_BYTES + 64
            data["log_tail"] = "[...]" + str(data.get("log_tail", ""))[excess:]
            line = (json.dumps(data, separators=(",", ":"), default=str) + "\n").encode()
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                # A torn line left by a crashed writer must not swallow this one.
                size = os.fstat(fd).st_size
                if size and _last_byte(self.path, size) != b"\n":
                    line = b"\n" + line
                written = os.write(fd, line)
                if written != len(line):
                    raise OSError(f"short write to {self.path}")
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def files(self) -> list[Path]:
        if self.directory.exists() and not self.directory.is_dir():
            raise UsageError(f"run history {self.directory}: exists and is not a directory")
        return sorted(p for p in self.directory.glob(f"*{SUFFIX}") if p.is_file())

    def records(self) -> list[RunRecord]:
        seen: dict[str, RunRecord] = {}
        self.skipped = 0
        for path in self.files():
            try:
                with open(path, "rb") as fh:
                    for raw in fh:
                        if not raw.strip():
                            continue
                        record = self._parse(raw)
                        if record is None:
                            self.skipped += 1
                        else:
                            seen.setdefault(record.id, record)
            except OSError as exc:
                raise UsageError(f"run history {path}: cannot read: {exc.strerror}") from exc
        return sorted(seen.values(), key=lambda r: (r.ts, r.run_id, r.attempt))

    @staticmethod
    def _parse(raw: bytes) -> RunRecord | None:
        try:
            data = json.loads(raw)
            return RunRecord.from_json(data) if isinstance(data, dict) else None
        except (ValueError, TypeError, KeyError):
            return None


def _last_byte(path: Path, size: int) -> bytes:
    with open(path, "rb") as fh:
        fh.seek(size - 1)
        return fh.read(1)
