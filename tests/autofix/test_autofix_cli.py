"""`ci-ml autofix` and `ci-ml run --autofix N` through the real CLI, on real failures."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest

from ci_ml.autofix.history import JsonlHistory
from ci_ml.autofix.interface import FailureClass, RunRecord
from tests.autofix.servers import flaky_server
from tests.conftest import FIXTURES, run_cli

BUGGY = FIXTURES / "autofix" / "buggy.py"


def _edit(cfg: Path, *pairs: tuple[str, str]) -> None:
    text = cfg.read_text()
    for old, new in pairs:
        assert old in text, old
        text = text.replace(old, new)
    cfg.write_text(text)


def _history(project: Path) -> list[RunRecord]:
    return JsonlHistory(project / ".ci-ml-cache" / "history").records()


def _train_runs(project: Path) -> list[RunRecord]:
    return [r for r in _history(project) if r.step == "train"]


@pytest.fixture
def memory_hungry(example_project: Path) -> Path:
    """A wide MLP whose full-size batches need more memory than the step's limit allows."""
    _edit(example_project / "ci-ml.yaml",
          ("  name: cnn ", "  name: mlp\n  # "), ("  input_shape: [1, 8, 8]", "  input_shape: null"),
          ("    channels: [32, 64, 128]", "    hidden: [32768]"), ("epochs: 15", "epochs: 1"),
          ("batch_size: 64", "batch_size: 1024"))
    with open(example_project / "ci-ml.yaml", "a") as fh:
        fh.write("limits:\n  steps:\n    train: {memory_mb: 420, timeout_s: 900}\n")
    return example_project


@pytest.mark.slow
def test_out_of_memory_is_classified_and_the_recommended_retry_succeeds(
        memory_hungry: Path) -> None:
    failed = run_cli("train", "--out", "out", cwd=memory_hungry)
    assert failed.code == 3, failed.output
    assert "error: train: out of memory: killed by the kernel's OOM killer at the 420 MiB" \
        in failed.stderr
    assert "ci-ml autofix" in failed.stderr   # the hint
    (first,) = _train_runs(memory_hungry)
    assert first.failure is not None
    assert first.failure.failure_class is FailureClass.OUT_OF_MEMORY
    assert first.settings.batch_size == 1024 and first.settings.memory_mb == 420

    advice = run_cli("autofix", "--out", "out", cwd=memory_hungry)
    assert advice.code == 0, advice.output
    assert "class: out-of-memory" in advice.stdout
    assert "recommended  P(success)" in advice.stdout and "objective" in advice.stdout
    assert "recommendation: retry train with" in advice.stdout
    assert "to keep it, put this in the config:" in advice.stdout
    assert _train_runs(memory_hungry) == [first]   # advice alone runs nothing

    applied = run_cli("autofix", "--apply", "--out", "out", cwd=memory_hungry)
    assert applied.code == 0, applied.output
    assert "train passed" in applied.stderr
    assert (memory_hungry / "out" / "model" / "model.safetensors").is_file()
    first_again, retry = _train_runs(memory_hungry)
    assert retry.ok and retry.run_id == first.run_id and retry.attempt == 1
    assert retry.remediation is not None and retry.remediation["after"] == first.id
    assert retry.settings.batch_size == 1024   # the effective batch is kept
    assert (retry.settings.memory_mb or 0) > 420 or (retry.settings.accumulation_steps or 1) > 1
    assert retry.usage.peak_anon_bytes > 0 and retry.usage.wall_s > 0

    done = run_cli("autofix", "--out", "out", cwd=memory_hungry)
    assert done.code == 2 and "has no failed step" in done.stderr


@pytest.mark.slow
def test_a_code_error_is_classified_and_not_retried(example_project: Path) -> None:
    shutil.copy(BUGGY, example_project / "buggy.py")
    _edit(example_project / "ci-ml.yaml", ("  name: cnn ", "  name: buggy:factory\n  # "),
          ("  input_shape: [1, 8, 8]", "  input_shape: [64]"),
          ("    channels: [32, 64, 128]", "    {}"), ("epochs: 15", "epochs: 1"))
    result = run_cli("run", "--only", "train", "--autofix", "2", "--out", "out",
                     cwd=example_project)
    assert result.code == 3, result.output
    assert "AttributeError: 'Net' object has no attribute 'input_scale'" in result.stderr
    assert "class: code-error" in result.stdout
    assert "recommendation: not retried: a code error is deterministic" in result.stdout
    assert "retry 1 of 2" not in result.stdout
    (run,) = _train_runs(example_project)   # one run: no retry was made
    assert run.failure is not None and run.failure.failure_class is FailureClass.CODE_ERROR
    assert "AttributeError" in run.failure.evidence

    again = run_cli("autofix", "--apply", "--out", "out", cwd=example_project)
    assert again.code == 1, again.output
    assert "not retried" in again.stdout
    assert len(_train_runs(example_project)) == 1


def test_a_transient_failure_is_retried_after_a_backoff(example_project: Path) -> None:
    _edit(example_project / "ci-ml.yaml",
          ("advisories: ../advisories/pypa-vulns", "advisories: null\n    service: osv"))
    with open(example_project / "ci-ml.yaml", "a") as fh:
        fh.write("autofix: {backoff_s: 0.2}\n")
    with flaky_server() as server:
        server.status = 503
        answered = []

        def recover_after_first() -> None:   # the service is back once one request failed
            if server.requests and not answered:
                answered.append(True)
                server.status = 200

        stop = threading.Event()

        def watch() -> None:
            while not stop.wait(0.02):
                recover_after_first()

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            result = run_cli("run", "--only", "scan-deps", "--autofix", "2", "--out", "out",
                             cwd=example_project,
                             env={"PIP_AUDIT_VULNERABILITY_SERVICE": "osv",
                                  "PIP_AUDIT_OSV_URL": server.url + "/v1/query"})
        finally:
            stop.set()
    assert result.code == 0, result.output
    assert "class: transient" in result.stdout
    assert "waiting 0.2 s before retry 1 of 2" in result.stdout
    scans = [r for r in _history(example_project) if r.step == "scan-deps"]
    assert [(r.attempt, r.status) for r in scans] == [(0, "failed"), (1, "passed")]
    assert scans[1].remediation is not None and scans[1].remediation["class"] == "transient"


def test_autofix_without_a_history_or_a_failed_run_is_a_usage_error(
        example_project: Path, tmp_path: Path) -> None:
    nothing = run_cli("autofix", cwd=example_project)
    assert nothing.code == 2
    assert nothing.stderr.count("error:") == 1 and "no step run" in nothing.stderr
    unknown = run_cli("autofix", "--run", "no-such-run", cwd=example_project)
    assert unknown.code == 2 and "not in the run history" in unknown.stderr
    not_a_dir = tmp_path / "history-file"
    not_a_dir.write_text("")
    bad = run_cli("autofix", cwd=example_project, env={"CI_ML_HISTORY": str(not_a_dir)})
    assert bad.code == 2 and "not a directory" in bad.stderr
    assert "internal error" not in nothing.stderr + unknown.stderr + bad.stderr
