"""Steps with limits run in their own process: same outputs and errors, recorded runs."""

from __future__ import annotations

import json
from pathlib import Path

from ci_ml.autofix.history import JsonlHistory
from ci_ml.autofix.interface import RunRecord
from tests.conftest import run_cli


def _limit(project: Path, text: str) -> None:
    with open(project / "ci-ml.yaml", "a") as fh:
        fh.write(text)


def _runs(project: Path) -> list[RunRecord]:
    return JsonlHistory(project / ".ci-ml-cache" / "history").records()


def test_a_step_with_limits_runs_in_its_own_process_with_the_same_outputs(
        example_project: Path) -> None:
    plain = run_cli("data", "check", "--out", "plain", cwd=example_project)
    assert plain.code == 0, plain.output
    _limit(example_project, "limits:\n  steps:\n    data-check: {memory_mb: 512, timeout_s: 120}\n"
                            "cache: {enabled: false}\n")
    limited = run_cli("data", "check", "--out", "limited", cwd=example_project)
    assert limited.code == 0, limited.output
    assert limited.stderr.count("data-check passed") == 1
    first, second = _runs(example_project)
    assert (first.isolated, second.isolated) == (False, True)
    assert second.enforcement.value in ("cgroup-v1", "cgroup-v2", "rlimit-as")
    assert second.settings.memory_mb == 512 and second.settings.timeout_s == 120
    assert second.usage.peak_rss_bytes > 0 and second.usage.wall_s > 0
    assert second.input_bytes == first.input_bytes > 0
    report = json.loads((example_project / "plain" / "data-report.json").read_text())
    again = json.loads((example_project / "limited" / "data-report.json").read_text())
    assert [c["name"] for c in report["checks"]] == [c["name"] for c in again["checks"]]
    manifest = json.loads((example_project / "limited" / "manifest.json").read_text())
    assert manifest["steps"][0]["status"] == "passed"


def test_a_cached_step_spawns_nothing_and_records_nothing(example_project: Path) -> None:
    _limit(example_project, "limits:\n  steps:\n    data-check: {timeout_s: 120}\n")
    assert run_cli("data", "check", "--out", "out", cwd=example_project).code == 0
    assert len(_runs(example_project)) == 1
    warm = run_cli("data", "check", "--out", "out", cwd=example_project)
    assert warm.code == 0 and "cached" in warm.stderr
    assert len(_runs(example_project)) == 1


def test_a_step_over_its_time_limit_fails_with_one_error_line_and_nothing_published(
        example_project: Path) -> None:
    _limit(example_project, "limits:\n  steps:\n    data-check: {timeout_s: 0.05}\n")
    result = run_cli("data", "check", "--out", "out", cwd=example_project)
    assert result.code == 3, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: data-check: timeout: timed out after 0.05s (process group killed); "
                      + errors[0].split("; ", 1)[1]]
    assert "hint: `ci-ml autofix`" in result.stderr
    assert not (example_project / "out" / "data-report.json").exists()
    (run,) = _runs(example_project)
    assert run.timed_out and run.failure is not None and run.failure.rule == "timeout"


def test_limits_that_cannot_be_enforced_are_refused_before_anything_runs(
        example_project: Path) -> None:
    _limit(example_project, "limits:\n  isolate: never\n  steps:\n    train: {memory_mb: 512}\n")
    result = run_cli("train", "--out", "out", cwd=example_project)
    assert result.code == 2
    assert result.stderr.count("error:") == 1 and "memory_mb=512" in result.stderr
    assert not (example_project / "out").exists()


def test_an_unknown_step_under_limits_is_named(example_project: Path) -> None:
    _limit(example_project, "limits:\n  steps:\n    trian: {memory_mb: 512}\n")
    result = run_cli("data", "check", "--out", "out", cwd=example_project)
    assert result.code == 2
    assert "limits.steps.trian: unknown key (did you mean 'train'?)" in result.stderr


def test_a_history_that_cannot_be_written_never_fails_the_step(example_project: Path,
                                                               tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    result = run_cli("data", "check", "--out", "out", cwd=example_project,
                     env={"CI_ML_HISTORY": str(blocker / "history")})
    assert result.code == 0, result.output
    assert "warning: run history not written" in result.stderr
