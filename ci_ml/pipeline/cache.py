"""The content-hash step cache: ``<dir>/<step>/<key>/{entry.json, out/...}``.

An entry is assembled in a private temporary directory and renamed into place,
so concurrent runs never see a partial entry; if two runs race to store the
same key, the first rename wins and the second simply discards its copy.

The cache travels between CI jobs and machines, so a restored entry is evidence
only if it is what the step wrote. ``entry.json`` records the step, the key, the
outcome and the sha256 of every file under ``out/``; a lookup re-hashes the files
and compares, and a restore re-hashes the copies it made. With a key in
``CI_ML_CACHE_KEY`` (a CI secret), ``entry.json`` carries an HMAC-SHA256 over all of
that, and entries without a valid one are refused. Any mismatch is a miss: logged,
the entry removed, the step run again; never a result.

Without a key the hashes catch corruption and edits of the outputs alone, not a
writer who also rewrites ``entry.json``: anyone who can write the cache can forge
an entry. Set ``CI_ML_CACHE_KEY`` wherever the cache is shared with less trusted jobs.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ci_ml.errors import UsageError
from ci_ml.fsutil import canonical_json, copy_path, hash_path, sha256_file
from ci_ml.pipeline.interface import StepOutcome

CACHE_KEY_ENV = "CI_ML_CACHE_KEY"  # noqa: S105 - the name of a variable
MIN_KEY_BYTES = 16
ENTRY = "entry.json"
FORMAT = 2


class CacheError(UsageError):
    """The cache directory cannot be used: not a directory, or the disk is full (exit 2)."""


def cache_key_from_env() -> bytes | None:
    """The HMAC key, from the CI system's secret store through the environment."""
    value = os.environ.get(CACHE_KEY_ENV, "")
    if not value:
        return None
    if len(value.encode()) < MIN_KEY_BYTES:
        raise UsageError(f"{CACHE_KEY_ENV}: too short ({len(value.encode())} bytes); use at "
                         f"least {MIN_KEY_BYTES} random bytes (e.g. `openssl rand -hex 32`)")
    return value.encode()


def check_cache_dir(root: Path, label: str) -> None:
    """Fail before anything runs if the cache directory cannot be one."""
    probe = root
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe == root and not root.is_dir():
        raise CacheError(f"{label} {root}: exists and is not a directory")
    if not probe.is_dir():
        raise CacheError(f"{label} {root}: cannot be created ({probe} is a file, not a "
                         "directory)")


def _files(out: Path) -> dict[str, str]:
    """sha256 of every file under ``out``, by path relative to it (symlinks not followed)."""
    found = {}
    for dirpath, dirs, names in os.walk(out):
        dirs.sort()
        for name in sorted(names):
            path = Path(dirpath) / name
            found[path.relative_to(out).as_posix()] = ("symlink" if path.is_symlink()
                                                      else sha256_file(path))
    return found


@dataclass(frozen=True)
class Entry:
    outcome: StepOutcome
    outputs: Mapping[str, str]     # declared output -> hash_path (what the manifest records)
    files: Mapping[str, str]       # every file under out/ -> sha256
    tools: Mapping[str, str] = field(default_factory=dict)   # tool versions in the key


class StepCache:
    def __init__(self, root: Path, enabled: bool = True, *, key: bytes | None = None,
                 warn: Callable[[str], None] | None = None) -> None:
        self.root = root
        self.enabled = enabled
        self.key = key
        self.warn = warn if warn is not None else (lambda message: None)
        self._verified: dict[tuple[str, str], Entry] = {}

    def _entry(self, step: str, key: str) -> Path:
        return self.root / step / key

    def _mac(self, body: Mapping[str, Any]) -> str | None:
        if self.key is None:
            return None
        digest = hmac.new(self.key, canonical_json(body).encode(), hashlib.sha256)
        return "hmac-sha256:" + digest.hexdigest()

    # ------------------------------------------------------------------ reading

    def _reject(self, step: str, key: str, why: str) -> None:
        self.warn(f"cache: not using the cached result of {step} (entry {key[:12]}): {why}; "
                  "the step runs again")
        entry = self._entry(step, key)
        aside = entry.with_name(f".rejected-{key[:12]}-{os.getpid()}")
        try:
            os.rename(entry, aside)   # so the re-run can store a good entry under this key
        except OSError:
            return
        shutil.rmtree(aside, ignore_errors=True)

    def _load(self, step: str, key: str) -> Entry | None:
        """The entry, verified against its record (and MAC); None when absent or rejected."""
        if not self.enabled:
            return None
        if (step, key) in self._verified:
            return self._verified[(step, key)]
        entry = self._entry(step, key)
        try:
            doc = json.loads((entry / ENTRY).read_text("utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            if entry.is_dir():
                self._reject(step, key, f"{ENTRY} is unreadable ({exc})")
            return None
        problem, verified = self._check(step, key, entry, doc)
        if problem is not None:
            self._reject(step, key, problem)
            return None
        assert verified is not None
        self._verified[(step, key)] = verified
        return verified

    def _check(self, step: str, key: str, entry: Path,
               doc: Any) -> tuple[str | None, Entry | None]:
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            return f"{ENTRY} is not a ci-ml cache entry (format {FORMAT})", None
        body = {k: v for k, v in doc.items() if k != "mac"}
        if self.key is not None:
            expected = self._mac(body)
            if not isinstance(doc.get("mac"), str) or not hmac.compare_digest(
                    doc["mac"], expected or ""):
                return ("its HMAC does not verify with " + CACHE_KEY_ENV +
                        (" (the entry has none)" if not doc.get("mac") else "")), None
        if doc.get("step") != step or doc.get("key") != key:
            return f"{ENTRY} was written for {doc.get('step')}/{str(doc.get('key'))[:12]}", None
        try:
            outcome = StepOutcome.from_json(doc["outcome"])
            outputs = {str(k): str(v) for k, v in doc["outputs"].items()}
            recorded = {str(k): str(v) for k, v in doc["files"].items()}
            tools = {str(k): str(v) for k, v in (doc.get("tools") or {}).items()}
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            return f"{ENTRY} is malformed ({exc})", None
        problem = _compare(recorded, _files(entry / "out"), "out/")
        if problem:
            return problem, None
        return None, Entry(outcome, outputs, recorded, tools)

    def lookup(self, step: str, key: str) -> StepOutcome | None:
        entry = self._load(step, key)
        return entry.outcome if entry else None

    def output_hashes(self, step: str, key: str, outputs: tuple[str, ...]) -> dict[str, str] | None:
        """The hashes of a verified entry's outputs (what the steps after it key on)."""
        entry = self._load(step, key)
        return dict(entry.outputs) if entry else None

    def restore(self, step: str, key: str, outputs: tuple[str, ...], dest: Path) -> bool:
        """Copy a cached step's outputs into ``dest`` (the staging directory) and check the
        copies against the entry's record. False (logged): the entry changed since it was
        looked up; ``dest`` is then emptied and the step must run."""
        entry = self._load(step, key)
        if entry is None:
            return False
        src = self._entry(step, key) / "out"
        for rel in outputs:
            if (src / rel).exists() or (src / rel).is_symlink():
                try:
                    copy_path(src / rel, dest / rel)
                except OSError as exc:
                    _clear(dest)
                    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS,
                                     errno.EACCES):
                        raise CacheError(f"{dest / rel}: cannot restore {step} from the "
                                         f"cache: {exc.strerror}") from exc
                    self._forget(step, key)
                    self._reject(step, key, f"out/{rel} cannot be read ({exc.strerror})")
                    return False
        wanted = {f: sha for f, sha in entry.files.items()
                  if any(f == rel or f.startswith(rel.rstrip("/") + "/") for rel in outputs)}
        copied = {f: sha for f, sha in _files(dest).items()}
        problem = _compare(wanted, copied, "out/")
        if problem:
            _clear(dest)
            self._forget(step, key)
            self._reject(step, key, problem)
            return False
        return True

    def _forget(self, step: str, key: str) -> None:
        self._verified.pop((step, key), None)

    # ------------------------------------------------------------------ writing

    def recorded_tools(self, step: str) -> Iterator[tuple[str, dict[str, str]]]:
        """(key, tool versions) of every complete entry of ``step`` that recorded them.

        A job without a step's tools (a lean install) cannot compute the key that step had
        where it ran; it can check that an entry's key is what the inputs give with the
        entry's own tool versions (see ``ci_ml.pipeline.runner``).
        """
        base = self.root / step
        if not self.enabled or not base.is_dir():
            return
        for entry in sorted(base.iterdir()):
            if entry.name.startswith(".") or not (entry / ENTRY).is_file():
                continue
            verified = self._load(step, entry.name)
            if verified is not None and verified.tools:
                yield entry.name, dict(verified.tools)

    def store(self, step: str, key: str, outcome: StepOutcome, outputs: tuple[str, ...],
              src: Path, tools: Mapping[str, str] | None = None) -> None:
        if not self.enabled:
            return
        final = self._entry(step, key)
        if (final / ENTRY).exists() and self._load(step, key) is not None:
            return
        tmp: Path | None = None
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{key[:12]}."))
            hashes = {}
            for rel in outputs:
                if (src / rel).exists():
                    copy_path(src / rel, tmp / "out" / rel)
                    hashes[rel] = hash_path(tmp / "out" / rel)
            files = _files(tmp / "out")
            recorded_tools = {str(k): str(v) for k, v in (tools or {}).items()}
            body = {"format": FORMAT, "step": step, "key": key, "outcome": outcome.to_json(),
                    "outputs": hashes, "files": files, "tools": recorded_tools}
            doc = {**body, "mac": self._mac(body)}
            # entry.json last: its presence is what marks an entry complete.
            (tmp / ENTRY).write_text(json.dumps(doc, indent=2), "utf-8")
            os.rename(tmp, final)
            self._verified[(step, key)] = Entry(outcome, hashes, files, recorded_tools)
        except OSError:
            # Lost a race to an identical entry, or the cache is not writable: never fatal.
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)


def _compare(recorded: Mapping[str, str], found: Mapping[str, str], prefix: str) -> str | None:
    for name, sha in sorted(recorded.items()):
        got = found.get(name)
        if got is None:
            return f"{prefix}{name} is missing"
        if got != sha:
            return f"{prefix}{name} hashes to {got[:12]}, recorded {sha[:12]}"
    extra = sorted(set(found) - set(recorded))
    if extra:
        return f"{prefix}{extra[0]} was added after the entry was written"
    return None


def _clear(dest: Path) -> None:
    shutil.rmtree(dest, ignore_errors=True)
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError:
        pass   # a full disk: the runner removes the whole staging area anyway
