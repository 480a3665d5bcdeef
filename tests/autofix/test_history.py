"""The run history: one JSON line per step run, whole lines under concurrent writers."""

from __future__ import annotations

import json
import multiprocessing
from dataclasses import replace
from pathlib import Path

import pytest

from ci_ml.autofix.history import MAX_LINE_BYTES, JsonlHistory, writer_id
from ci_ml.autofix.interface import RunRecord
from ci_ml.errors import UsageError
from tests.autofix.records import oom, record

WRITERS, EACH = 4, 60


def _append_many(directory: str, worker: int) -> None:
    history = JsonlHistory(Path(directory), writer="local")
    for i in range(EACH):
        # Failed runs carry a log tail: lines of several kB, well past PIPE_BUF.
        history.append(replace(oom(), id=f"w{worker}-{i}", log_tail="x" * (3000 + worker * 997)))


def test_concurrent_writers_never_interleave_or_lose_lines(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_append_many, args=(str(tmp_path), w)) for w in range(WRITERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    lines = (tmp_path / "local.jsonl").read_bytes().splitlines()
    assert len(lines) == WRITERS * EACH
    ids = [json.loads(line)["id"] for line in lines]
    assert len(set(ids)) == WRITERS * EACH
    history = JsonlHistory(tmp_path)
    assert len(history.records()) == WRITERS * EACH and history.skipped == 0


def test_a_torn_line_from_a_crashed_writer_is_skipped_and_cannot_swallow_the_next(
        tmp_path: Path) -> None:
    history = JsonlHistory(tmp_path, writer="local")
    history.append(record())
    with open(history.path, "ab") as fh:
        fh.write(b'{"v": 1, "id": "torn", "ts": "2026-')   # the writer died mid-line
    history.append(record(step="prune"))
    records = history.records()
    assert [r.step for r in records] == ["train", "prune"]
    assert history.skipped == 1


def test_garbage_and_records_missing_identity_are_skipped(tmp_path: Path) -> None:
    good = record()
    (tmp_path / "local.jsonl").write_text("\n".join([
        json.dumps(good.to_json()), "not json", "[1, 2]",
        json.dumps({**good.to_json(), "id": "x2", "status": "exploded"}),
        json.dumps({**good.to_json(), "id": ""}), ""]) + "\n")
    history = JsonlHistory(tmp_path)
    assert [r.id for r in history.records()] == [good.id]
    assert history.skipped == 4


def test_merged_ci_caches_keep_every_jobs_file_and_drop_duplicates(tmp_path: Path) -> None:
    shared = record()
    train_job = JsonlHistory(tmp_path, writer="gh-100-1-train")
    scan_job = JsonlHistory(tmp_path, writer="gh-100-1-scan-deps")
    train_job.append(shared)
    train_job.append(record(step="prune"))
    scan_job.append(shared)    # a file both jobs restored from an earlier cache
    scan_job.append(record(step="scan-deps", batch=None))
    records = JsonlHistory(tmp_path).records()
    assert sorted(r.step for r in records) == ["prune", "scan-deps", "train"]
    assert records == sorted(records, key=lambda r: r.ts)


def test_a_record_survives_the_round_trip(tmp_path: Path) -> None:
    original = oom(log="Killed\n", batch=512, accumulation=2)
    history = JsonlHistory(tmp_path)
    history.append(original)
    (back,) = history.records()
    assert back == replace(original, writer=back.writer)


def test_overlong_lines_keep_the_end_of_the_log(tmp_path: Path) -> None:
    history = JsonlHistory(tmp_path)
    history.append(replace(oom(), log_tail="a" * 200_000 + "THE END"))
    raw = history.path.read_bytes()
    assert raw.count(b"\n") == 1 and len(raw) <= MAX_LINE_BYTES
    (back,) = history.records()
    assert back.log_tail.endswith("THE END") and back.log_tail.startswith("[...]")


def test_writer_ids_name_the_ci_job_and_are_safe_file_names() -> None:
    assert writer_id({}) == "local"
    assert writer_id({"GITHUB_ACTIONS": "true", "GITHUB_RUN_ID": "42", "GITHUB_RUN_ATTEMPT": "2",
                      "GITHUB_JOB": "train/../x"}) == "gh-42-2-train_.._x"
    assert writer_id({"GITLAB_CI": "true", "CI_JOB_ID": "7"}) == "gl-7"


def test_a_history_path_that_is_a_file_is_a_usage_error(tmp_path: Path) -> None:
    target = tmp_path / "history"
    target.write_text("")
    with pytest.raises(UsageError, match="not a directory"):
        JsonlHistory(target).records()


def test_records_round_trip_through_json_as_documented() -> None:
    data = oom().to_json()
    assert set(data) >= {"v", "id", "ts", "run_id", "attempt", "writer", "project", "step", "key",
                         "settings", "input_bytes", "usage", "enforcement", "isolated",
                         "exit_code", "signal", "timed_out", "oom_killed", "status", "failure",
                         "message", "log_tail", "remediation"}
    assert data["failure"]["class"] == "out-of-memory"
    assert RunRecord.from_json(data).failure == oom().failure


def test_secrets_in_a_failed_runs_log_never_reach_the_history() -> None:
    from ci_ml.autofix.record import redact

    env = {"REGISTRY_TOKEN": "ghp_abcdef123456", "ZAP_API_KEY": "zz-key-998877",
           "HOME": "/home/runner", "SHORT_SECRET": "abc"}
    text = "auth failed for ghp_abcdef123456 at /home/runner (key zz-key-998877, abc)"
    assert redact(text, env) == "auth failed for *** at /home/runner (key ***, abc)"
