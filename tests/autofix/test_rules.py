"""Every rule of the classifier's table, each against a real failure made here.

Each failure is a real process ending the way the rule describes: run under real
limits (ci_ml.limits), talking to a real loopback server, or a real ci-ml command
whose run record the history keeps. The last test checks that no rule of the table
is left without one.
"""

from __future__ import annotations

import os
import site
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from ci_ml.autofix.classify import RuleClassifier, default_rules
from ci_ml.autofix.history import JsonlHistory
from ci_ml.autofix.interface import Classification, Failure, FailureClass, RunRecord
from ci_ml.limits import MIB, Enforcement, Limits, ProcessResult, run_limited
from ci_ml.limits.cgroup import open_group
from tests.autofix.servers import flaky_server
from tests.conftest import REPO, run_cli

PY = sys.executable
COVERED: set[str] = set()
F = Callable[..., None]


def covers(*rules: str) -> Callable[[F], F]:
    def mark(test: F) -> F:
        COVERED.update(rules)
        return test
    return mark


def classify(result: ProcessResult) -> Classification:
    return RuleClassifier().classify(Failure(
        result.exit_code, result.signal_name, result.timed_out, result.oom_killed,
        result.limits.memory_bytes is not None, result.log_tail))


def py(code: str, limits: Limits | None = None, **kw: object) -> ProcessResult:
    return run_limited([PY, "-c", textwrap.dedent(code)], limits or Limits(), **kw)  # type: ignore[arg-type]


def expect(result: ProcessResult, rule: str, klass: FailureClass) -> Classification:
    c = classify(result)
    assert (c.rule, c.failure_class) == (rule, klass), (c, result.log_tail[-800:])
    return c


def recorded(project: Path, rule: str, klass: FailureClass) -> RunRecord:
    """The failed run ci-ml recorded last, classified as expected."""
    records = [r for r in JsonlHistory(project / ".ci-ml-cache" / "history").records()
               if not r.ok]
    assert records, "no failed run recorded"
    failure = records[-1].failure
    assert failure is not None and (failure.rule, failure.failure_class) == (rule, klass), failure
    return records[-1]


# -- how the process ended ----------------------------------------------------------------

@covers("oom-killer")
def test_out_of_memory_in_a_cgroup() -> None:
    group = open_group(64 * MIB)
    if group is None:
        pytest.skip("no writable memory cgroup here")
    group.remove()
    result = py("x = bytearray(400 * 1024 * 1024)", Limits(memory_bytes=128 * MIB))
    expect(result, "oom-killer", FailureClass.OUT_OF_MEMORY)


@covers("timeout")
def test_timeout() -> None:
    expect(py("import time; time.sleep(30)", Limits(timeout_s=0.3, kill_grace_s=1)),
           "timeout", FailureClass.TIMEOUT)


@covers("sigkill", "shell-sigkill")
def test_killed_by_sigkill_directly_and_through_a_shell() -> None:
    suicide = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
    expect(py(suicide), "sigkill", FailureClass.OUT_OF_MEMORY)
    shell = run_limited(["sh", "-c", f'{PY} -c "{suicide}"; exit $?'])
    assert shell.exit_code == 137
    expect(shell, "shell-sigkill", FailureClass.OUT_OF_MEMORY)


@covers("python-memory-error")
def test_memory_error_under_rlimit_as() -> None:
    result = py("x = bytearray(800 * 1024 * 1024)", Limits(memory_bytes=256 * MIB),
                prefer=[Enforcement.RLIMIT_AS])
    expect(result, "python-memory-error", FailureClass.OUT_OF_MEMORY)


@covers("native-allocation")
def test_pytorch_allocator_failure_under_rlimit_as() -> None:
    # One BLAS/OpenMP thread: on a many-core machine a thread per CPU fills 3 GiB of
    # address space at `import torch` already (the thread-memory rule's failure, below).
    one_thread = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    result = py("import torch\nt = torch.empty(6 * 1024 ** 3, dtype=torch.uint8)",
                Limits(memory_bytes=3 * 1024 * MIB), prefer=[Enforcement.RLIMIT_AS],
                env=one_thread)
    c = expect(result, "native-allocation", FailureClass.OUT_OF_MEMORY)
    assert "DefaultCPUAllocator" in c.evidence


@covers("thread-memory")
def test_thread_memory_exhausted_at_import_is_out_of_memory_not_a_missing_command() -> None:
    """glibc's loader exits 127 when it cannot allocate a new thread's TLS: the exit code
    of a missing command, so without this rule the fix tried would be installing a tool.
    It takes a machine with many CPUs (a BLAS thread per CPU), so the log is recorded."""
    log = (REPO / "fixtures" / "recorded" / "autofix" / "thread-local-data-exit-127.log")
    c = RuleClassifier().classify(Failure(127, None, memory_limited=True,
                                          log=log.read_text()))
    assert (c.rule, c.failure_class) == ("thread-memory", FailureClass.OUT_OF_MEMORY)
    assert "thread-local data" in c.evidence
    # A command that is really missing still is one.
    missing = run_limited(["sh", "-c", "no-such-command-ci-ml-test"])
    expect(missing, "command-not-found", FailureClass.TOOL_MISSING)


@covers("file-size-limit", "sigxfsz", "shell-sigxfsz")
def test_file_too_large_in_python_in_a_native_tool_and_through_a_shell(tmp_path: Path) -> None:
    limit = Limits(file_size_bytes=1 * MIB)
    python = py(f"open({str(tmp_path / 'a')!r}, 'wb').write(b'x' * 4_000_000)", limit)
    expect(python, "file-size-limit", FailureClass.RESOURCE_EXHAUSTED)
    native = run_limited(["dd", "if=/dev/zero", f"of={tmp_path / 'b'}", "bs=1M", "count=4"],
                         limit)
    expect(native, "sigxfsz", FailureClass.RESOURCE_EXHAUSTED)
    shell = run_limited(["sh", "-c", f"head -c 4000000 /dev/zero > {tmp_path / 'c'}"], limit)
    expect(shell, "shell-sigxfsz", FailureClass.RESOURCE_EXHAUSTED)


@covers("open-files")
def test_too_many_open_files() -> None:
    result = py("files = [open('/dev/null') for _ in range(500)]", Limits(open_files=64))
    expect(result, "open-files", FailureClass.RESOURCE_EXHAUSTED)


@covers("fatal-signal")
def test_segmentation_fault_in_native_code() -> None:
    result = py("import ctypes; ctypes.string_at(0)")
    assert result.signal_name == "SIGSEGV"
    expect(result, "fatal-signal", FailureClass.CODE_ERROR)


# -- networks and locks --------------------------------------------------------------------

FETCH = "import urllib.request; urllib.request.urlopen({url!r}, timeout=10).read()"


@covers("http-5xx", "connection", "http-4xx")
def test_http_errors_and_dropped_connections_from_a_real_server() -> None:
    with flaky_server() as server:
        server.status = 503
        expect(py(FETCH.format(url=server.url + "/weights.bin")), "http-5xx",
               FailureClass.TRANSIENT)
        server.status = 404
        expect(py(FETCH.format(url=server.url + "/weights.bin")), "http-4xx",
               FailureClass.BAD_INPUT)
        server.drop = True
        expect(py(FETCH.format(url=server.url + "/weights.bin")), "connection",
               FailureClass.TRANSIENT)
        port = server.port
    # Nothing listens there any more: connection refused.
    expect(py(FETCH.format(url=f"http://127.0.0.1:{port}/")), "connection",
           FailureClass.TRANSIENT)


@covers("http-5xx", "connection")
def test_pip_audit_against_a_failing_vulnerability_service(tmp_path: Path) -> None:
    req = tmp_path / "requirements.txt"
    req.write_text("requests==2.25.0\n")
    audit = [str(Path(PY).parent / "pip-audit"), "-r", str(req), "--no-deps", "--disable-pip",
             "--format", "json", "--progress-spinner", "off", "--vulnerability-service", "osv"]
    with flaky_server() as server:
        server.status = 503
        unavailable = run_limited([*audit, "--osv-url", server.url + "/v1/query"])
        expect(unavailable, "http-5xx", FailureClass.TRANSIENT)
        server.drop = True
        dropped = run_limited([*audit, "--osv-url", server.url + "/v1/query"])
        expect(dropped, "connection", FailureClass.TRANSIENT)


@covers("lock-timeout")
def test_database_locked_by_a_concurrent_job(tmp_path: Path) -> None:
    db = tmp_path / "registry.sqlite"
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        result = py(f"import sqlite3\nc = sqlite3.connect({str(db)!r}, timeout=0.2)\n"
                    "c.execute('INSERT INTO t VALUES (1)')")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    expect(result, "lock-timeout", FailureClass.TRANSIENT)


# -- tools ----------------------------------------------------------------------------------

@covers("command-not-found", "not-executable")
def test_missing_and_unexecutable_commands(tmp_path: Path) -> None:
    expect(run_limited(["ci-ml-no-such-tool"]), "command-not-found", FailureClass.TOOL_MISSING)
    expect(run_limited(["sh", "-c", "ci-ml-no-such-tool --version"]), "command-not-found",
           FailureClass.TOOL_MISSING)
    script = tmp_path / "train.sh"
    script.write_text("#!/bin/sh\necho training\n")
    expect(run_limited([str(script)]), "not-executable", FailureClass.TOOL_MISSING)


@covers("module-not-found")
def test_python_package_not_installed() -> None:
    expect(py("import torchvision_is_not_installed_here"), "module-not-found",
           FailureClass.TOOL_MISSING)


# -- ci-ml's own failures, as its run history records them ----------------------------------

@covers("tool-not-installed")
def test_ci_ml_scanner_not_installed(example_project: Path, tmp_path: Path) -> None:
    # An interpreter whose directory holds no bandit, and a PATH without one either.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(PY)
    env = {**os.environ, "PATH": "/usr/bin:/bin", "CI": "true",
           "PYTHONPATH": os.pathsep.join([str(REPO), *site.getsitepackages()])}
    env.pop("CI_ML_TOOL_BANDIT", None)
    proc = subprocess.run([str(bin_dir / "python"), "-m", "ci_ml", "scan", "code", "--out", "out"],
                          cwd=example_project, env=env, capture_output=True, text=True,
                          check=False, timeout=300)
    assert proc.returncode == 3, proc.stderr
    recorded(example_project, "tool-not-installed", FailureClass.TOOL_MISSING)


@covers("tool-timeout")
def test_ci_ml_scanner_over_its_time_limit(example_project: Path) -> None:
    cfg = example_project / "ci-ml.yaml"
    cfg.write_text(cfg.read_text().replace("scan:\n", "scan:\n  timeout_s: 0.01\n", 1))
    result = run_cli("scan", "code", "--out", "out", cwd=example_project)
    assert result.code == 3, result.output
    recorded(example_project, "tool-timeout", FailureClass.TIMEOUT)


@covers("vulnerability-service")
def test_ci_ml_dependency_scan_against_a_service_answering_503(example_project: Path) -> None:
    cfg = example_project / "ci-ml.yaml"
    cfg.write_text(cfg.read_text().replace("advisories: ../advisories/pypa-vulns",
                                           "advisories: null\n    service: osv"))
    with flaky_server() as server:
        server.status = 503
        result = run_cli("scan", "deps", "--out", "out", cwd=example_project,
                         env={"PIP_AUDIT_VULNERABILITY_SERVICE": "osv",
                              "PIP_AUDIT_OSV_URL": server.url + "/v1/query"})
    assert result.code == 3, result.output
    recorded(example_project, "vulnerability-service", FailureClass.TRANSIENT)


@covers("bad-input")
def test_ci_ml_refusing_its_own_bad_config(example_project: Path) -> None:
    cfg = example_project / "ci-ml.yaml"
    cfg.write_text(cfg.read_text().replace("  epochs: 15", "  epoch: 15"))
    result = run_limited([PY, "-m", "ci_ml", "train", "--out", "out"], cwd=example_project,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.exit_code == 2 and "unknown key" in result.log_tail
    expect(result, "bad-input", FailureClass.BAD_INPUT)


@covers("python-traceback")
def test_a_bug_in_user_code(tmp_path: Path) -> None:
    script = tmp_path / "features.py"
    script.write_text("def ratio(a, b):\n    return a / b\n\nprint(ratio(1, 0))\n")
    c = expect(run_limited([PY, str(script)]), "python-traceback", FailureClass.CODE_ERROR)
    assert c.evidence.startswith("ZeroDivisionError")


# -- what no rule matches, and what a log cannot fake ----------------------------------------

def test_a_silent_failure_is_unknown() -> None:
    c = classify(py("import sys; sys.exit(1)"))
    assert (c.failure_class, c.rule) == (FailureClass.UNKNOWN, "fallback")


def test_network_noise_earlier_in_the_log_does_not_make_a_code_error_transient() -> None:
    result = py("""
        import sys
        print('WARNING: Retrying after connection broken: Connection reset by peer')
        print('503 Service Unavailable (retrying)')
        for i in range(10): print('epoch', i)
        {}['missing']
    """)
    c = expect(result, "python-traceback", FailureClass.CODE_ERROR)
    assert "KeyError" in c.evidence


def test_a_log_that_claims_out_of_memory_does_not_beat_a_measured_timeout() -> None:
    result = py("import time\nprint('MemoryError: out of memory', flush=True)\ntime.sleep(30)",
                Limits(timeout_s=0.5, kill_grace_s=1))
    expect(result, "timeout", FailureClass.TIMEOUT)


def test_every_rule_in_the_table_has_a_real_failure_test() -> None:
    assert {r.id for r in default_rules()} == COVERED


def test_rules_are_evaluated_in_table_order_first_match_wins() -> None:
    ids = [r.id for r in default_rules()]
    assert ids.index("oom-killer") < ids.index("python-traceback")
    assert ids.index("http-5xx") < ids.index("python-traceback")
    assert ids.index("module-not-found") < ids.index("python-traceback")
    # A traceback whose exception is a MemoryError is out of memory, not a code error.
    log = "Traceback (most recent call last):\n  File 'train.py', line 3\nMemoryError\n"
    assert RuleClassifier().classify(Failure(1, None, log=log)).rule == "python-memory-error"
