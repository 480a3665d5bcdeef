"""What a limited run is given (``Limits``) and what it reports (``ProcessResult``)."""

from __future__ import annotations

import enum
import signal as _signal
from dataclasses import dataclass
from typing import Any

from ci_ml.errors import ToolError

MIB = 1 << 20


class Enforcement(enum.Enum):
    """How a memory limit was enforced (or why it was not)."""

    CGROUP_V2 = "cgroup-v2"    # memory.max of a child cgroup: the whole tree's RSS + page cache
    CGROUP_V1 = "cgroup-v1"    # memory.limit_in_bytes of a child cgroup: the same, older kernels
    RLIMIT_AS = "rlimit-as"    # each process's address space (virtual size), not its RSS
    NONE = "none"              # no memory limit was asked for

    @property
    def measures_virtual(self) -> bool:
        return self is Enforcement.RLIMIT_AS


class LimitError(ToolError):
    """A limit could not be set up (bad value, unusable cgroup named by the environment)."""


@dataclass(frozen=True)
class Limits:
    """Limits of one run; ``None`` means unlimited (the machine's own limits apply)."""

    memory_bytes: int | None = None
    timeout_s: float | None = None
    open_files: int | None = None        # RLIMIT_NOFILE of every process
    file_size_bytes: int | None = None   # RLIMIT_FSIZE: the largest file a process may write
    # Between SIGTERM and SIGKILL when the timeout strikes: time to flush logs and exit.
    kill_grace_s: float = 5.0

    def __post_init__(self) -> None:
        for name in ("memory_bytes", "open_files", "file_size_bytes"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise LimitError(f"limit {name} must be positive, got {value}")
        if self.timeout_s is not None and not self.timeout_s > 0:
            raise LimitError(f"limit timeout_s must be positive, got {self.timeout_s}")
        if self.kill_grace_s < 0:
            raise LimitError(f"limit kill_grace_s must not be negative, got {self.kill_grace_s}")

    @property
    def any(self) -> bool:
        return any(v is not None for v in (self.memory_bytes, self.timeout_s, self.open_files,
                                           self.file_size_bytes))

    def to_json(self) -> dict[str, Any]:
        return {"memory_bytes": self.memory_bytes, "timeout_s": self.timeout_s,
                "open_files": self.open_files, "file_size_bytes": self.file_size_bytes}


@dataclass(frozen=True)
class Usage:
    """What the process tree used, measured while it ran and when it was reaped.

    ``peak_rss_bytes`` is the larger of the highest sampled sum of the tree's resident
    memory and the largest single process's high-water mark (so a spike between two
    samples still counts); ``peak_vm_bytes`` is the largest address space of one process
    (what ``RLIMIT_AS`` limits); ``cpu_s`` is user + system time of the tree's reaped
    processes; ``peak_open_files`` the most descriptors one process held.
    """

    peak_rss_bytes: int = 0
    peak_vm_bytes: int = 0
    cpu_s: float = 0.0
    wall_s: float = 0.0
    peak_open_files: int = 0
    cgroup_peak_bytes: int | None = None   # the cgroup's own high-water mark (includes cache)
    samples: int = 0
    peak_anon_bytes: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"peak_rss_bytes": self.peak_rss_bytes, "peak_vm_bytes": self.peak_vm_bytes,
                "cpu_s": round(self.cpu_s, 4), "wall_s": round(self.wall_s, 4),
                "peak_open_files": self.peak_open_files,
                "cgroup_peak_bytes": self.cgroup_peak_bytes, "samples": self.samples,
                "peak_anon_bytes": self.peak_anon_bytes}

    @classmethod
    def from_json(cls, data: Any) -> Usage:
        if not isinstance(data, dict):
            return cls()

        def num(key: str, kind: type = int) -> Any:
            value = data.get(key)
            return kind(value) if isinstance(value, int | float) and not isinstance(value, bool) \
                else kind(0)

        peak = data.get("cgroup_peak_bytes")
        return cls(num("peak_rss_bytes"), num("peak_vm_bytes"), num("cpu_s", float),
                   num("wall_s", float), num("peak_open_files"),
                   int(peak) if isinstance(peak, int) and not isinstance(peak, bool) else None,
                   num("samples"), num("peak_anon_bytes"))


@dataclass(frozen=True)
class ProcessResult:
    """How a limited run ended: exactly one of ``exit_code`` and ``signal`` is set."""

    argv: tuple[str, ...]
    exit_code: int | None
    signal: int | None
    timed_out: bool
    oom_killed: bool        # the kernel's OOM killer acted inside the run's cgroup
    enforcement: Enforcement
    limits: Limits
    usage: Usage
    log_tail: str           # the end of stdout + stderr, decoded leniently
    stragglers: int = 0     # processes still alive after the leader exited (then killed)
    spawn_error: str | None = None   # the command could not be started (the OS's reason)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out

    @property
    def signal_name(self) -> str | None:
        return signal_name(self.signal)

    @property
    def returncode(self) -> int:
        """The status as a shell reports it: the exit code, or 128 + the signal number."""
        if self.exit_code is not None:
            return self.exit_code
        return 128 + (self.signal or 0)

    def describe(self) -> str:
        """One line: how it ended, in words a CI log reader expects."""
        if self.timed_out:
            return f"timed out after {self.limits.timeout_s:g}s (process group killed)"
        if self.oom_killed:
            limit = self.limits.memory_bytes or 0
            return f"killed by the kernel's OOM killer at the {limit // MIB} MiB memory limit"
        if self.signal is not None:
            return f"killed by signal {self.signal_name}"
        return f"exited with code {self.exit_code}"


def signal_name(number: int | None) -> str | None:
    if number is None:
        return None
    try:
        return _signal.Signals(number).name
    except ValueError:
        return f"SIG{number}"
