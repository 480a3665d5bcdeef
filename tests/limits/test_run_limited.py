"""run_limited on real processes: limits enforced by the kernel, usage measured, trees killed."""

from __future__ import annotations

import io
import os
import sys
import time
from pathlib import Path

import pytest

from ci_ml.limits import MIB, Enforcement, LimitError, Limits, run_limited
from ci_ml.limits.cgroup import open_group

PY = sys.executable


def _cgroups_work() -> bool:
    group = open_group(64 * MIB)
    if group is None:
        return False
    group.remove()
    return True


needs_cgroup = pytest.mark.skipif(not _cgroups_work(), reason="no writable memory cgroup here")


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


def _gone(pid: int) -> bool:
    """Whether ``pid`` is dead (or a zombie) within a few seconds."""
    for _ in range(100):
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


@needs_cgroup
def test_memory_limit_is_enforced_by_a_cgroup_and_reported_as_oom() -> None:
    result = run_limited([PY, "-c", "x = bytearray(300 * 1024 * 1024); print('survived')"],
                         Limits(memory_bytes=100 * MIB))
    assert result.enforcement in (Enforcement.CGROUP_V1, Enforcement.CGROUP_V2)
    assert result.oom_killed and result.signal_name == "SIGKILL" and result.exit_code is None
    assert "survived" not in result.log_tail
    assert "OOM killer at the 100 MiB" in result.describe()
    assert result.usage.cgroup_peak_bytes is not None
    assert result.usage.cgroup_peak_bytes <= 100 * MIB


def test_rlimit_as_is_the_fallback_and_fails_the_allocation() -> None:
    result = run_limited([PY, "-c", "x = bytearray(600 * 1024 * 1024)"],
                         Limits(memory_bytes=200 * MIB), prefer=[Enforcement.RLIMIT_AS])
    assert result.enforcement is Enforcement.RLIMIT_AS
    assert result.exit_code == 1 and not result.oom_killed
    assert "MemoryError" in result.log_tail


def test_a_run_within_its_limit_succeeds_and_its_peak_memory_and_cpu_are_measured() -> None:
    code = ("import time\nx = bytearray(150 * 1024 * 1024)\nfor i in range(0, len(x), 4096):\n"
            "    x[i] = 1\ntime.sleep(0.3)\nsum(range(3_000_000))\nprint('done')")
    result = run_limited([PY, "-c", code], Limits(memory_bytes=400 * MIB))
    assert result.ok and result.exit_code == 0 and result.signal is None
    assert "done" in result.log_tail
    assert result.usage.peak_rss_bytes >= 150 * MIB
    assert result.usage.peak_anon_bytes >= 140 * MIB
    assert result.usage.cpu_s > 0.05
    assert result.usage.wall_s >= 0.3
    assert result.usage.samples > 0


def test_peak_memory_counts_the_whole_process_tree() -> None:
    child = "x = bytearray(120 * 1024 * 1024)\nfor i in range(0, len(x), 4096): x[i] = 1\n" \
            "import time; time.sleep(0.8)"
    code = (f"import subprocess, sys\nprocs = [subprocess.Popen([sys.executable, '-c', {child!r}])"
            " for _ in range(2)]\n[p.wait() for p in procs]")
    result = run_limited([PY, "-c", code])
    assert result.ok, result.log_tail
    assert result.usage.peak_anon_bytes >= 2 * 110 * MIB


def test_timeout_kills_the_whole_process_group() -> None:
    started = time.monotonic()
    result = run_limited(["sh", "-c", "sleep 60 & echo $!; sleep 60"],
                         Limits(timeout_s=0.5, kill_grace_s=2))
    assert time.monotonic() - started < 10
    assert result.timed_out and result.signal_name == "SIGTERM"
    assert _gone(int(result.log_tail.split()[0]))
    assert "timed out after 0.5s" in result.describe()


def test_a_process_ignoring_sigterm_gets_sigkill_after_the_grace_period() -> None:
    code = ("import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "print('ready', flush=True)\ntime.sleep(60)")
    result = run_limited([PY, "-c", code], Limits(timeout_s=1.0, kill_grace_s=0.5))
    assert result.timed_out and result.signal_name == "SIGKILL"


def test_processes_left_behind_by_the_leader_are_killed() -> None:
    result = run_limited(["sh", "-c", "sleep 60 & echo $!"])
    assert result.exit_code == 0 and result.stragglers == 1
    assert _gone(int(result.log_tail.split()[0]))


def test_file_size_and_open_files_limits_are_enforced(tmp_path: Path) -> None:
    big = run_limited([PY, "-c", f"open({str(tmp_path / 'f')!r}, 'wb').write(b'x' * 5_000_000)"],
                      Limits(file_size_bytes=1 * MIB))
    assert big.exit_code == 1 and "File too large" in big.log_tail
    many = run_limited([PY, "-c", "fs = [open('/dev/null') for _ in range(200)]"],
                       Limits(open_files=32))
    assert many.exit_code == 1 and "Too many open files" in many.log_tail
    fine = run_limited([PY, "-c", "import time; fs = [open('/dev/null') for _ in range(40)]; "
                        "time.sleep(0.5)"], Limits(open_files=256))
    assert fine.ok and fine.usage.peak_open_files >= 40


def test_output_is_echoed_logged_and_its_tail_kept(tmp_path: Path) -> None:
    echo = io.BytesIO()
    log = tmp_path / "run.log"
    result = run_limited([PY, "-c", "import sys\nfor i in range(3000): print(f'line {i}')\n"
                          "print('to stderr', file=sys.stderr)"],
                         echo=echo, log_path=log, tail_bytes=200)
    assert result.ok
    assert b"line 0\n" in echo.getvalue() and b"to stderr" in echo.getvalue()
    assert log.read_bytes() == echo.getvalue()
    assert len(result.log_tail) <= 200 and "to stderr" in result.log_tail
    assert "line 0\n" not in result.log_tail


def test_missing_and_unexecutable_commands_end_like_in_a_shell(tmp_path: Path) -> None:
    missing = run_limited(["ci-ml-no-such-command-here"])
    assert missing.exit_code == 127 and "command not found" in missing.log_tail
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    denied = run_limited([str(script)])
    assert denied.exit_code == 126


def test_environment_and_working_directory_reach_the_command(tmp_path: Path) -> None:
    result = run_limited([PY, "-c", "import os; print(os.getcwd(), os.environ['CI_ML_PROBE'])"],
                         cwd=tmp_path, env={**os.environ, "CI_ML_PROBE": "42"})
    assert result.log_tail.split() == [str(tmp_path), "42"]


@pytest.mark.parametrize("limits", [dict(memory_bytes=0), dict(timeout_s=0.0),
                                    dict(open_files=-1), dict(kill_grace_s=-1.0)])
def test_nonsense_limits_are_refused(limits: dict[str, float]) -> None:
    with pytest.raises(LimitError):
        Limits(**limits)  # type: ignore[arg-type]
