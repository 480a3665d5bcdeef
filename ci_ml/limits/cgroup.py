"""Memory cgroups for one run: a fresh child group, its limit, its OOM count, removal.

The group is made under the cgroup ci-ml itself runs in (so the machine's own
hierarchy and accounting stay intact), or under ``$CI_ML_CGROUP_PARENT`` (a group
delegated to this user, e.g. by ``systemd-run --user --scope -p Delegate=yes``).
cgroup v2 needs the ``memory`` controller enabled in the parent's
``cgroup.subtree_control``; cgroup v1 needs a writable ``memory`` hierarchy.
When neither works, ``open_group`` returns ``None`` and the caller falls back to
``RLIMIT_AS``.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from ci_ml.limits.interface import Enforcement, LimitError

PARENT_ENV = "CI_ML_CGROUP_PARENT"
_counter = itertools.count()


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _mounts() -> list[tuple[Path, str, set[str]]]:
    found = []
    for line in _read(Path("/proc/self/mounts")).splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[2] in ("cgroup", "cgroup2"):
            found.append((Path(parts[1]), parts[2], set(parts[3].split(","))))
    return found


def _own_paths() -> dict[str, str]:
    """``/proc/self/cgroup`` as {controller: path}; the v2 hierarchy is under ''."""
    paths: dict[str, str] = {}
    for line in _read(Path("/proc/self/cgroup")).splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            for controller in parts[1].split(",") if parts[1] else [""]:
                paths[controller] = parts[2]
    return paths


def _candidates() -> list[tuple[Path, Enforcement]]:
    """Parent directories to try, best first: v2, then v1."""
    explicit = os.environ.get(PARENT_ENV)
    if explicit:
        parent = Path(explicit)
        if (parent / "cgroup.subtree_control").exists():
            return [(parent, Enforcement.CGROUP_V2)]
        if (parent / "memory.limit_in_bytes").exists():
            return [(parent, Enforcement.CGROUP_V1)]
        raise LimitError(f"{PARENT_ENV}={explicit} is not a cgroup v2 directory nor a v1 "
                         "memory cgroup")
    own = _own_paths()
    out: list[tuple[Path, Enforcement]] = []
    for mount, fstype, _ in _mounts():
        if fstype == "cgroup2" and "" in own:
            out += [(d, Enforcement.CGROUP_V2) for d in _within(mount, own[""])]
    for mount, fstype, options in _mounts():
        if fstype == "cgroup" and "memory" in options and "memory" in own:
            out += [(d, Enforcement.CGROUP_V1) for d in _within(mount, own["memory"])]
    return out


def _within(mount: Path, rel: str) -> list[Path]:
    # In a container the mount's root is our own group while the path names the host's.
    full = mount / rel.lstrip("/")
    return [full, mount] if full != mount and full.is_dir() else [mount]


@dataclass
class MemoryGroup:
    path: Path
    kind: Enforcement

    @property
    def procs_file(self) -> Path:
        return self.path / "cgroup.procs"

    def pids(self) -> list[int]:
        return [int(p) for p in _read(self.procs_file).split() if p.strip().isdigit()]

    def oom_kills(self) -> int:
        name = "memory.events" if self.kind is Enforcement.CGROUP_V2 else "memory.oom_control"
        for line in _read(self.path / name).splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill" and value.strip().isdigit():
                return int(value)
        return 0

    def peak_bytes(self) -> int | None:
        name = "memory.peak" if self.kind is Enforcement.CGROUP_V2 else "memory.max_usage_in_bytes"
        text = _read(self.path / name).strip()
        return int(text) if text.isdigit() else None

    def kill_all(self) -> int:
        """SIGKILL every process left in the group; how many there were."""
        killed = 0
        for _ in range(50):
            pids = self.pids()
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
                    killed += 1
            time.sleep(0.02)
        return killed

    def remove(self) -> None:
        self.kill_all()
        for _ in range(50):
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.02)   # the last task is still being torn down


def _make(parent: Path, kind: Enforcement, limit_bytes: int | None) -> MemoryGroup | None:
    path = parent / f"ci-ml-{os.getpid()}-{next(_counter)}"
    try:
        path.mkdir()
    except OSError:
        return None
    group = MemoryGroup(path, kind)
    try:
        if kind is Enforcement.CGROUP_V2:
            if not (path / "memory.max").exists():
                raise OSError("memory controller not enabled for this group")
            (path / "memory.max").write_text(str(limit_bytes) if limit_bytes else "max")
            # No swap either: a limited run that swaps instead of failing measures nothing.
            with contextlib.suppress(OSError):
                (path / "memory.swap.max").write_text("0")
        else:
            (path / "memory.limit_in_bytes").write_text(str(limit_bytes or -1))
            with contextlib.suppress(OSError):
                (path / "memory.memsw.limit_in_bytes").write_text(str(limit_bytes or -1))
            with contextlib.suppress(OSError):
                (path / "memory.swappiness").write_text("0")
    except OSError:
        group.remove()
        return None
    return group


def open_group(limit_bytes: int | None) -> MemoryGroup | None:
    """A new memory cgroup limited to ``limit_bytes`` (``None``: unlimited, to measure the
    tree's memory the way a limit would count it), or ``None`` if none can be made."""
    for parent, kind in _candidates():
        group = _make(parent, kind, limit_bytes)
        if group is not None:
            return group
    return None


def join(procs_file: str) -> None:
    """Move the calling process into the group (called in the child, before exec)."""
    fd = os.open(procs_file, os.O_WRONLY)
    try:
        os.write(fd, str(os.getpid()).encode())
    finally:
        os.close(fd)
