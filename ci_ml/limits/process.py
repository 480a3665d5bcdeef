"""``run_limited``: run a command under enforced limits and measure its process tree.

The command starts in a new session (so its process group is its own and a
terminal's Ctrl-C reaches ci-ml, which then stops it cleanly), with:

- a memory limit: a fresh memory cgroup (v2, else v1) that the child joins before
  ``exec``, so every descendant is inside it and the kernel's OOM killer acts on the
  tree; where no cgroup can be made, ``RLIMIT_AS`` on every process instead;
- ``RLIMIT_NOFILE`` / ``RLIMIT_FSIZE`` when asked (too many open files, too large a file);
- a timeout: SIGTERM to the whole process group (and every process of the cgroup),
  then SIGKILL after ``kill_grace_s``.

When the leader exits, whatever it left running in its group or cgroup is killed:
a step never leaves processes behind. While it runs, the tree (the leader and its
descendants, found through ``/proc/PID/task/*/children``) is sampled for resident
memory, address space and open descriptors; ``wait4`` adds the leader's own
high-water mark and the CPU time of everything it reaped.
"""

from __future__ import annotations

import collections
import contextlib
import os
import resource
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ci_ml.limits import cgroup
from ci_ml.limits.interface import Enforcement, Limits, ProcessResult, Usage


class Sink(Protocol):
    """Where output is copied: a binary file, ``sys.stderr.buffer``, a decoder to text."""

    def write(self, data: bytes, /) -> object: ...

    def flush(self) -> object: ...


TAIL_BYTES = 64 * 1024
_FIRST_SAMPLE_S, _MAX_SAMPLE_S = 0.01, 0.2


@dataclass
class _Tree:
    """Running maxima over the samples of one process tree."""

    root: int
    peak_rss: int = 0
    peak_anon: int = 0
    peak_vm: int = 0
    peak_hwm: int = 0
    peak_fds: int = 0
    samples: int = 0
    # Per process: its peak RSS less its file-backed pages (libraries, mapped files) at the
    # last sample; the sum estimates the tree's peak anonymous memory between samples too.
    anon_hwm: dict[int, int] = field(default_factory=dict)

    def pids(self, group: cgroup.MemoryGroup | None) -> list[int]:
        found, pending = [], [self.root]
        while pending:
            pid = pending.pop()
            found.append(pid)
            for task in _listdir(f"/proc/{pid}/task"):
                text = _read(f"/proc/{pid}/task/{task}/children")
                pending.extend(int(c) for c in text.split() if c.isdigit())
        if group is not None:   # a descendant that left the tree is still in the cgroup
            found.extend(p for p in group.pids() if p not in found)
        return found

    def sample(self, group: cgroup.MemoryGroup | None) -> None:
        rss_sum = anon_sum = 0
        for pid in self.pids(group):
            status = _status(pid)
            if not status:
                continue
            rss_sum += status.get("VmRSS", 0)
            anon_sum += status.get("RssAnon", 0)
            self.anon_hwm[pid] = max(self.anon_hwm.get(pid, 0), status.get("VmHWM", 0) -
                                     status.get("RssFile", 0) - status.get("RssShmem", 0))
            self.peak_hwm = max(self.peak_hwm, status.get("VmHWM", 0))
            self.peak_vm = max(self.peak_vm, status.get("VmPeak", 0))
            self.peak_fds = max(self.peak_fds, len(_listdir(f"/proc/{pid}/fd")))
        self.peak_rss = max(self.peak_rss, rss_sum)
        self.peak_anon = max(self.peak_anon, anon_sum, sum(self.anon_hwm.values()))
        self.samples += 1


def _read(path: str) -> str:
    try:
        with open(path) as fh:
            return fh.read()
    except OSError:
        return ""


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def _status(pid: int) -> dict[str, int]:
    """The ``kB`` fields of /proc/PID/status that matter here, in bytes."""
    out = {}
    for line in _read(f"/proc/{pid}/status").splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM", "VmPeak", "RssAnon", "RssFile", "RssShmem"):
            value = rest.split()
            if value and value[0].isdigit():
                out[key] = int(value[0]) * 1024
    return out


class _LogPump(threading.Thread):
    """Copies the child's output to ``echo`` and ``log``, keeping the last bytes."""

    def __init__(self, fd: int, echo: Sink | None, log: Sink | None,
                 tail_bytes: int) -> None:
        super().__init__(daemon=True, name="ci-ml-log-pump")
        self.fd, self.echo, self.log = fd, echo, log
        self.tail: collections.deque[bytes] = collections.deque()
        self.tail_size, self.tail_bytes = 0, tail_bytes

    def run(self) -> None:
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            for sink in (self.echo, self.log):
                if sink is not None:
                    with contextlib.suppress(OSError, ValueError):
                        sink.write(chunk)
                        sink.flush()
            self.tail.append(chunk)
            self.tail_size += len(chunk)
            while self.tail_size - len(self.tail[0]) >= self.tail_bytes:
                self.tail_size -= len(self.tail.popleft())
        os.close(self.fd)

    def text(self) -> str:
        data = b"".join(self.tail)[-self.tail_bytes:]
        return data.decode("utf-8", errors="replace")


def _preexec(limits: Limits, procs_file: str | None,
             rlimit_as: int | None) -> Callable[[], None]:
    def prepare() -> None:
        if procs_file is not None:
            cgroup.join(procs_file)
        pairs = [(resource.RLIMIT_AS, rlimit_as), (resource.RLIMIT_NOFILE, limits.open_files),
                 (resource.RLIMIT_FSIZE, limits.file_size_bytes)]
        for which, value in pairs:
            if value is not None:
                _, hard = resource.getrlimit(which)
                cap = value if hard == resource.RLIM_INFINITY else min(value, hard)
                resource.setrlimit(which, (cap, cap))
    return prepare


def _signal_tree(pid: int, group: cgroup.MemoryGroup | None, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
    if group is not None:
        for member in group.pids():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(member, sig)


def _group_members(pgid: int) -> set[int]:
    """Live (not zombie) processes of a process group: one scan of /proc, only when
    ``killpg(pgid, 0)`` says there is anyone left."""
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return set()
    members = set()
    for name in _listdir("/proc"):
        if name.isdigit():
            stat = _read(f"/proc/{name}/stat")
            fields = stat[stat.rfind(")") + 2:].split()
            if len(fields) > 2 and fields[0] != "Z" and fields[2] == str(pgid):
                members.add(int(name))
    return members


def _reap_stragglers(pid: int, group: cgroup.MemoryGroup | None) -> int:
    """Kill what the leader left behind in its process group or cgroup; how many."""
    left = _group_members(pid)
    if left:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    if group is not None:
        left.update(group.pids())
        group.kill_all()
    return len(left)


def _spawn_failure(argv: Sequence[str], exc: OSError, limits: Limits) -> ProcessResult:
    # What a shell would report: 127 not found, 126 found but not executable.
    code = 127 if isinstance(exc, FileNotFoundError) else 126
    what = "command not found" if code == 127 else f"cannot execute ({exc.strerror})"
    return ProcessResult(tuple(argv), code, None, False, False, Enforcement.NONE, limits,
                         Usage(), f"ci-ml: {argv[0]}: {what}\n",
                         spawn_error=exc.strerror or str(exc))


def run_limited(
    argv: Sequence[str],
    limits: Limits | None = None,
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    echo: Sink | None = None,
    log_path: Path | None = None,
    tail_bytes: int = TAIL_BYTES,
    prefer: Sequence[Enforcement] = (Enforcement.CGROUP_V2, Enforcement.CGROUP_V1,
                                     Enforcement.RLIMIT_AS),
    measure: bool = True,
) -> ProcessResult:
    """Run ``argv`` to completion under ``limits``; never raises for how the command ended.

    stdout and stderr are merged, copied to ``echo`` (e.g. ``sys.stderr.buffer``) and
    ``log_path`` as they come, and their last ``tail_bytes`` returned in ``log_tail``.
    ``prefer`` orders the memory enforcement mechanisms to try; with ``measure``, a run
    without a memory limit still gets an (unlimited) cgroup where one can be made, so its
    ``usage.cgroup_peak_bytes`` counts memory the way a limit would.
    """
    limits = limits or Limits()
    group: cgroup.MemoryGroup | None = None
    enforcement, rlimit_as = Enforcement.NONE, None
    cgroups = [e for e in prefer if e is not Enforcement.RLIMIT_AS]
    if cgroups and (limits.memory_bytes is not None or measure):
        group = cgroup.open_group(limits.memory_bytes)
        if group is not None and group.kind not in cgroups:
            group.remove()
            group = None
    if limits.memory_bytes is not None:
        if group is not None:
            enforcement = group.kind
        elif Enforcement.RLIMIT_AS in prefer:
            enforcement, rlimit_as = Enforcement.RLIMIT_AS, limits.memory_bytes
    log = open(log_path, "ab") if log_path is not None else None  # noqa: SIM115
    read_fd, write_fd = os.pipe()
    started = time.perf_counter()
    try:
        try:
            proc = subprocess.Popen(
                list(argv), cwd=cwd, env=dict(env) if env is not None else None,
                stdin=subprocess.DEVNULL, stdout=write_fd, stderr=write_fd,
                start_new_session=True,
                preexec_fn=_preexec(limits, str(group.procs_file) if group else None,
                                    rlimit_as),
            )
        except OSError as exc:
            os.close(read_fd)
            return _spawn_failure(argv, exc, limits)
        finally:
            os.close(write_fd)
        pump = _LogPump(read_fd, echo, log, tail_bytes)
        pump.start()
        status, rusage, timed_out, tree = _wait(proc, limits, group)
        wall = time.perf_counter() - started
        stragglers = _reap_stragglers(proc.pid, group)
        pump.join(timeout=10)
        oom = group is not None and group.oom_kills() > 0
        usage = Usage(
            peak_rss_bytes=max(tree.peak_rss, tree.peak_hwm, rusage.ru_maxrss * 1024),
            peak_anon_bytes=tree.peak_anon, peak_vm_bytes=tree.peak_vm,
            cpu_s=rusage.ru_utime + rusage.ru_stime, wall_s=wall, peak_open_files=tree.peak_fds,
            cgroup_peak_bytes=group.peak_bytes() if group else None, samples=tree.samples,
        )
        exit_code = os.waitstatus_to_exitcode(status)
        return ProcessResult(
            argv=tuple(argv), exit_code=exit_code if exit_code >= 0 else None,
            signal=-exit_code if exit_code < 0 else None, timed_out=timed_out,
            oom_killed=oom, enforcement=enforcement, limits=limits, usage=usage,
            log_tail=pump.text(), stragglers=stragglers,
        )
    finally:
        if log is not None:
            log.close()
        if group is not None:
            group.remove()


def _wait(proc: subprocess.Popen[bytes], limits: Limits, group: cgroup.MemoryGroup | None,
          ) -> tuple[int, resource.struct_rusage, bool, _Tree]:
    """Sample the tree until the leader exits; enforce the timeout on the way."""
    tree = _Tree(proc.pid)
    deadline = (time.monotonic() + limits.timeout_s) if limits.timeout_s is not None else None
    kill_at: float | None = None
    timed_out = False
    interval = _FIRST_SAMPLE_S
    try:
        while True:
            try:
                pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
            except ChildProcessError:   # reaped elsewhere: nothing more to learn
                return 0, resource.getrusage(resource.RUSAGE_CHILDREN), timed_out, tree
            if pid == proc.pid:
                proc.returncode = os.waitstatus_to_exitcode(status)
                return status, rusage, timed_out, tree
            tree.sample(group)
            now = time.monotonic()
            if deadline is not None and now >= deadline and not timed_out:
                timed_out = True
                _signal_tree(proc.pid, group, signal.SIGTERM)
                kill_at = now + limits.kill_grace_s
            if kill_at is not None and now >= kill_at:
                _signal_tree(proc.pid, group, signal.SIGKILL)
                kill_at = None
            sleep = interval
            if deadline is not None and not timed_out:
                sleep = min(sleep, max(deadline - now, 0.001))
            time.sleep(sleep)
            interval = min(interval * 1.5, _MAX_SAMPLE_S)
    except BaseException:
        # Interrupted (Ctrl-C) or failing: never leave the tree running.
        _signal_tree(proc.pid, group, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(proc.pid, 0)
        raise

