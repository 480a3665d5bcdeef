"""Content hashing and atomic writes: the two things shared state needs.

Every artifact and cache entry is written to a temporary name in the same
directory and moved into place with ``os.replace``, so a reader (or a
concurrent run) sees either the old file or the new one, never half of one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_CHUNK = 1 << 20
# Directories that never hold project inputs: skipping them keeps hashes stable.
IGNORED_DIRS = frozenset({".git", "__pycache__", ".ci-ml-cache", ".pytest_cache", ".mypy_cache",
                          ".venv", "node_modules", ".ruff_cache"})


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def iter_files(path: Path) -> Iterator[Path]:
    """Files under ``path`` (or ``path`` itself), sorted, skipping caches and VCS dirs."""
    if path.is_file():
        yield path
        return
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if d not in IGNORED_DIRS)
        for name in sorted(files):
            if not name.endswith(".pyc"):
                yield Path(root) / name


def hash_path(path: Path) -> str:
    """sha256 of a file, or of a directory tree (relative names and contents)."""
    if path.is_file():
        return sha256_file(path)
    if not path.exists():
        return "missing"
    digest = hashlib.sha256()
    for file in iter_files(path):
        digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        digest.update(sha256_file(file).encode() + b"\n")
    return digest.hexdigest()


def hash_json(value: Any) -> str:
    return sha256_bytes(canonical_json(value).encode())


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def umask() -> int:
    """The process's umask, read without changing it (Linux), else by setting it back at once."""
    try:
        for line in Path("/proc/self/status").read_text("ascii").splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def atomic_write_bytes(path: Path, data: bytes, mode: int | None = None) -> None:
    """Write ``data`` to ``path`` atomically, with ``mode`` or, by default, what ``open()``
    would give a new file (0666 less the umask): mkstemp's 0600 would lock out the other
    users of the file, e.g. a container's non-root user reading a copied project."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fchmod(fh.fileno(), 0o666 & ~umask() if mode is None else mode)
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with _suppress_os_error():
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, value: Any) -> None:
    atomic_write_text(path, json.dumps(value, indent=2, sort_keys=False, default=str) + "\n")


def replace_path(src: Path, dst: Path) -> None:
    """Move ``src`` (file or directory) over ``dst``, replacing what was there."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.is_dir() and not dst.is_symlink():
        # A directory cannot be os.replace'd over a non-empty one: move the old aside first.
        aside = dst.with_name(f".{dst.name}.old-{os.getpid()}")
        os.replace(dst, aside)
        os.replace(src, dst)
        shutil.rmtree(aside, ignore_errors=True)
    else:
        os.replace(src, dst)


def copy_path(src: Path, dst: Path) -> None:
    if src.is_dir():
        shutil.copytree(src, dst, dirs_exist_ok=False)
    else:
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)


def file_hashes(root: Path, rels: Iterable[str]) -> dict[str, str]:
    return {rel: hash_path(root / rel) for rel in rels}


@contextmanager
def _suppress_os_error() -> Iterator[None]:
    try:
        yield
    except OSError:
        pass
