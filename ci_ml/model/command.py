"""Run a command under a time limit, and kill its whole process group when it ends.

Torch-free and self-contained, so any step can use it. The command runs in a new
session (its own process group): on timeout, and also after a normal exit (a script
that left a background child behind), the group gets SIGTERM, then SIGKILL after a
grace period; nothing the command started outlives it. Output goes to a log file
(bounded by the file system, not by memory) and the last lines are kept for messages.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

GRACE_S = 5.0
TAIL_BYTES = 4096


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int | None          # None: killed on timeout
    timed_out: bool
    duration_s: float
    log: Path
    tail: str                        # the last lines of the combined output

    @property
    def signalled(self) -> int | None:
        """The signal that ended the command (not ours), if one did."""
        if self.returncode is not None and self.returncode < 0:
            return -self.returncode
        return None


def _kill_group(pgid: int, grace_s: float) -> None:
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 0.0)):
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except (ProcessLookupError, PermissionError):
                return
            time.sleep(0.05)


def _tail(path: Path) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - TAIL_BYTES))
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""


def run_limited(argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], timeout_s: float,
                log: Path, grace_s: float = GRACE_S) -> CommandResult:
    """Run ``argv`` (never through a shell) with ``env``; stdout and stderr go to ``log``.

    Raises ``OSError`` (FileNotFoundError, PermissionError) when it cannot start.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with open(log, "wb") as out:
        proc = subprocess.Popen(list(argv), cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        timed_out = False
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
        except BaseException:
            # Interrupted (Ctrl-C): take the command down with us.
            _kill_group(proc.pid, grace_s)
            proc.wait()
            raise
        finally:
            # The group outlives its leader when the script forked: end it either way.
            _kill_group(proc.pid, grace_s if timed_out else 0.5)
        code = proc.wait()
    return CommandResult(tuple(argv), None if timed_out else code, timed_out,
                         time.monotonic() - started, log, _tail(log))
