"""The policy and the model: what is retried, with what, and why; on histories as
ci-ml records them (records built here, one per step run)."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest

from ci_ml.autofix.interface import Action, FailureClass, NothingToFix
from ci_ml.autofix.knobs import apply
from ci_ml.autofix.remediate import TRANSIENT_RETRIES, last_failed, recommend
from ci_ml.config import Config, load_config
from tests.autofix.records import history_of_successes, need_mb, oom, record, timeout
from tests.conftest import EXAMPLE

TRACEBACK = ("Traceback (most recent call last):\n  File \"model.py\", line 9, in forward\n"
             "AttributeError: 'Net' object has no attribute 'input_scale'\n")
HTTP_503 = ("Traceback (most recent call last):\n  File \"fetch.py\", line 2\n"
            "urllib.error.HTTPError: HTTP Error 503: Service Unavailable\n")


@pytest.fixture(scope="module")
def config() -> Config:
    return load_config(EXAMPLE / "ci-ml.yaml")


def with_autofix(config: Config, **values: float) -> Config:
    data = dict(config.data)
    data["autofix"] = {**config.section("autofix"), **values}
    return replace(config, data=data)


def test_out_of_memory_gets_a_configuration_predicted_to_fit(config: Config) -> None:
    history = history_of_successes()
    failed = oom(batch=1024, memory_mb=400)
    rec = recommend(config, failed, [*history, failed])
    assert rec.action is Action.RETRY and rec.classification.failure_class is \
        FailureClass.OUT_OF_MEMORY
    chosen = rec.chosen
    assert chosen is not None and chosen.changes
    s = chosen.settings
    assert s.batch_size == 1024   # the effective batch is never what changes
    assert need_mb(1024, s.accumulation_steps or 1) < (s.memory_mb or 0)
    assert chosen.prediction.p_success > 0.8
    assert rec.current is not None and rec.current.prediction.p_success < 0.2
    assert chosen.prediction.objective < rec.current.prediction.objective


def test_a_configuration_that_already_ran_out_of_memory_is_not_predicted_to_succeed(
        config: Config) -> None:
    history = history_of_successes()
    failed = oom(batch=1024, memory_mb=400)
    earlier = oom(batch=1024, memory_mb=480)
    rec = recommend(config, failed, [*history, earlier, failed])
    by_settings = {c.settings: c for c in rec.ranked}
    same_as_earlier = failed.settings.with_(memory_mb=480)
    if same_as_earlier in by_settings:
        assert by_settings[same_as_earlier].prediction.detail["memory"] < 0.1
    assert rec.chosen is not None and rec.chosen.settings.memory_mb != 480 or \
        (rec.chosen.settings.accumulation_steps or 1) > 1


def test_cold_start_out_of_memory_is_still_remediated_with_its_numbers(config: Config) -> None:
    failed = oom(batch=1024, memory_mb=400)
    rec = recommend(config, failed, [failed])
    assert rec.retry and rec.chosen is not None
    s = rec.chosen.settings
    assert (s.memory_mb or 0) > 400 or (s.accumulation_steps or 1) > 1
    assert 0.5 <= rec.chosen.prediction.p_success <= 1.0
    assert rec.history_runs == 1


def test_the_cheapest_sure_configuration_wins_prices_decide(config: Config) -> None:
    history = history_of_successes()
    failed = oom(batch=1024, memory_mb=400)
    records = [*history, failed]
    # Memory priced high: accumulate gradients in the memory there is.
    dear_memory = recommend(with_autofix(config, price_per_gb_minute=5.0, price_per_minute=0.001,
                                         penalty=1000.0), failed, records)
    # Time priced high and memory free: more memory, no slower micro-batches.
    dear_time = recommend(with_autofix(config, price_per_gb_minute=0.0, price_per_minute=5.0,
                                       penalty=1000.0), failed, records)
    assert dear_memory.chosen is not None and dear_time.chosen is not None
    m, t = dear_memory.chosen.settings, dear_time.chosen.settings
    assert (m.memory_mb or 0) < (t.memory_mb or 0)
    assert (m.accumulation_steps or 1) > (t.accumulation_steps or 1)
    for rec in (dear_memory, dear_time):
        assert rec.chosen is not None and rec.chosen.prediction.p_success > 0.8


def test_timeout_gets_a_longer_timeout_or_a_faster_configuration(config: Config) -> None:
    history = [record(batch=256, wall_s=w, timeout_s=600) for w in (28, 30, 31, 29, 33)]
    failed = timeout(batch=256, timeout_s=10, wall_s=10)
    rec = recommend(config, failed, [*history, failed])
    assert rec.retry and rec.chosen is not None
    assert (rec.chosen.settings.timeout_s or math.inf) > 33
    assert rec.chosen.prediction.p_success > 0.8
    assert rec.chosen.prediction.minutes == pytest.approx(0.5, rel=0.3)


@pytest.mark.parametrize("log,exit_code,klass", [
    (TRACEBACK, 1, FailureClass.CODE_ERROR),
    ("error: train: data.train: column 'px3' is not numeric\n", 2, FailureClass.BAD_INPUT),
    ("ci-ml: trivy: command not found\n", 127, FailureClass.TOOL_MISSING),
])
def test_deterministic_failures_are_never_retried_and_say_so(
        config: Config, log: str, exit_code: int, klass: FailureClass) -> None:
    failed = record(ok=False, log=log, exit_code=exit_code)
    rec = recommend(with_autofix(config, penalty=1e9, min_success=0.0), failed,
                    [*history_of_successes(), failed])
    assert rec.classification.failure_class is klass
    assert rec.action is Action.DO_NOT_RETRY and rec.chosen is None
    assert rec.reason.startswith("not retried:") and "deterministic" in rec.reason


def test_transient_failures_back_off_and_stop_when_the_service_stays_down(
        config: Config) -> None:
    records = []
    backoffs = []
    for attempt in range(TRANSIENT_RETRIES + 1):
        failed = record(ok=False, log=HTTP_503, run_id="flaky", attempt=attempt)
        records.append(failed)
        rec = recommend(config, failed, records)
        assert rec.classification.failure_class is FailureClass.TRANSIENT
        if attempt < TRANSIENT_RETRIES:
            assert rec.retry and rec.chosen is not None and not rec.chosen.changes
            backoffs.append(rec.backoff_s)
        else:
            assert not rec.retry and "looks down" in rec.reason
    assert backoffs == sorted(backoffs) and backoffs[0] == config.section("autofix")["backoff_s"]
    assert backoffs[1] == 2 * backoffs[0]


def test_an_unclassified_failure_is_retried_only_while_the_model_predicts_success(
        config: Config) -> None:
    history = [record(key="same") for _ in range(8)]
    first = record(ok=False, key="same", log="exit 1\n")
    rec = recommend(config, first, [*history, first])
    assert rec.classification.failure_class is FailureClass.UNKNOWN
    assert rec.retry and rec.chosen is not None and not rec.chosen.changes
    # The same inputs keep failing this way: a retry is predicted to fail, and not made.
    again = [record(ok=False, key="same", log="exit 1\n") for _ in range(4)]
    rec = recommend(config, again[-1], [*history, first, *again])
    assert not rec.retry and "P(success)" in rec.reason
    assert rec.current is not None and rec.current.prediction.p_success < 0.5


def test_a_retry_costing_more_than_the_failure_is_not_made(config: Config) -> None:
    failed = oom(batch=1024, memory_mb=400)
    rec = recommend(with_autofix(config, penalty=0.0), failed, [*history_of_successes(), failed])
    assert not rec.retry and "penalty" in rec.reason


def test_disk_full_on_the_machine_is_not_a_limit_a_retry_can_raise(config: Config) -> None:
    full = "OSError: [Errno 28] No space left on device\n"
    failed = record(ok=False, log=full)
    rec = recommend(config, failed, [*history_of_successes(), failed])
    assert rec.classification.failure_class is FailureClass.RESOURCE_EXHAUSTED
    assert not rec.retry
    too_many = "OSError: [Errno 24] Too many open files: 'shard-0099.bin'\n"
    capped = record(ok=False, log=too_many, open_files=64)
    rec = recommend(config, capped, [*history_of_successes(), capped])
    assert rec.retry and rec.chosen is not None and (rec.chosen.settings.open_files or 0) > 64


def test_the_recommendation_is_a_valid_config(config: Config, tmp_path: Path) -> None:
    failed = oom(batch=64, memory_mb=256)
    rec = recommend(config, failed, [*history_of_successes(), failed])
    assert rec.chosen is not None
    retried = apply(config, "train", rec.chosen.settings)
    limits = retried.section("limits")["steps"]["train"]
    assert limits["memory_mb"] == rec.chosen.settings.memory_mb
    assert retried.section("train")["accumulation_steps"] == rec.chosen.settings.accumulation_steps


def test_the_failure_to_fix_is_the_last_failed_step_of_the_latest_run() -> None:
    older = record(ok=False, log=TRACEBACK, run_id="a")
    ok_data = record(step="data-check", run_id="b", batch=None)
    failed = oom(run_id="b")
    assert last_failed([older, ok_data, failed], "digits") == failed
    retried = record(run_id="b", attempt=1)
    with pytest.raises(NothingToFix, match="no failed step"):
        last_failed([older, ok_data, failed, retried], "digits")
    assert last_failed([older, ok_data, failed, retried], "digits", run_id="a") == older
    with pytest.raises(NothingToFix, match="not in the run history"):
        last_failed([older], "digits", run_id="zzz")
    with pytest.raises(NothingToFix, match="no step run"):
        last_failed([older], "another-project")


def test_a_tools_own_timeout_is_not_a_limit_a_retry_can_raise(config: Config) -> None:
    log = "error: scan-code: did not run: bandit timed out after 900s; the scan did not run\n"
    failed = record(ok=False, step="scan-code", batch=None, memory_mb=None, timeout_s=None,
                    log=log, exit_code=3)
    history = [record(step="scan-code", batch=None, memory_mb=None, timeout_s=None)
               for _ in range(5)]
    rec = recommend(config, failed, [*history, failed])
    assert rec.classification.failure_class is FailureClass.TIMEOUT
    assert not rec.retry
