"""Acting on a recommendation: ``ci-ml autofix --apply`` and ``ci-ml run --autofix N``."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from ci_ml.autofix import knobs
from ci_ml.autofix.interface import Recommendation, RunRecord
from ci_ml.autofix.record import Attempt, attempt, current_attempt, open_history
from ci_ml.autofix.remediate import recommend
from ci_ml.autofix.report import lines, remediation
from ci_ml.config import Config
from ci_ml.console import Reporter
from ci_ml.errors import EXIT_TOOL, CiMlError
from ci_ml.pipeline.interface import StepFailed
from ci_ml.pipeline.runner import RunResult, run_pipeline

Echo = Callable[[str], None]


def failed_record(exc: StepFailed) -> RunRecord | None:
    return getattr(exc.cause, "record", None)


def rerun(config: Config, rec: Recommendation, out_dir: Path, reporter: Reporter,
          sleep: Callable[[float], None] = time.sleep) -> RunResult:
    """Run again what the failed invocation ran, with the recommended settings, as the
    next attempt of the same run (so the history links the retry to its failure)."""
    assert rec.chosen is not None
    failed = rec.record
    if rec.backoff_s:
        reporter.info(f"waiting {rec.backoff_s:g} s before the retry")
        sleep(rec.backoff_s)
    retry_config = knobs.apply(config, failed.step, rec.chosen.settings)
    only = failed.extra.get("only")
    stage = str(failed.extra.get("stage") or "staging")
    with attempt(Attempt(failed.run_id, failed.attempt + 1, remediation(rec))):
        result = run_pipeline(retry_config, out_dir, stage=stage,
                              only=list(only) if isinstance(only, list) and only else None,
                              reporter=reporter)
        note_cached(retry_config, result, failed)
    return result


def note_cached(config: Config, result: RunResult, failed: RunRecord) -> None:
    """A retry whose step the cache answered (another run already succeeded with these
    inputs) runs nothing, so nothing is recorded: say in the history that it passed."""
    step = result.record(failed.step)
    if step is None or not step.cached:
        return
    from ci_ml.autofix.record import Ending, make_record, write_record
    from ci_ml.limits import Enforcement, Usage

    record = make_record(config, failed.step, step.key, knobs.settings_of(config, failed.step),
                         failed.input_bytes, Usage(), Enforcement.NONE, False,
                         Ending("passed", 0), extra={**failed.extra, "cached": True})
    with contextlib.suppress(OSError, CiMlError):
        write_record(config, record)


def failed_in(config: Config, run_id: str, number: int) -> RunRecord | None:
    """The last failed step run of one attempt, from the history."""
    failed = [r for r in open_history(config).records()
              if r.run_id == run_id and r.attempt == number and not r.ok]
    return failed[-1] if failed else None


def run_with_autofix(config: Config, out_dir: Path, *, retries: int, stage: str,
                     only: Sequence[str] | None, force: bool, reporter: Reporter, echo: Echo,
                     sleep: Callable[[float], None] = time.sleep) -> RunResult:
    """``run_pipeline``, and after a failed step up to ``retries`` recommended retries.

    A step fails by raising (it crashed, was killed, or refused its input) or by ending
    in ERROR (a tool it runs failed); either way its run record says how.
    """
    run_id = current_attempt().run_id
    current, number, applied = config, 0, None
    previous: RunRecord | None = None
    while True:
        error: StepFailed | None = None
        result: RunResult | None = None
        with attempt(Attempt(run_id, number, applied)):
            try:
                result = run_pipeline(current, out_dir, stage=stage, only=only,
                                      force=force and number == 0, reporter=reporter)
            except StepFailed as exc:
                error = exc
            if result is not None and previous is not None:
                note_cached(current, result, previous)
        if result is not None and result.exit_code != EXIT_TOOL:
            return result
        record = (failed_record(error) if error is not None else None) or \
            failed_in(current, run_id, number)
        if number >= retries or record is None:
            if error is not None:
                raise error
            assert result is not None
            return result
        rec = recommend(current, record, open_history(current).records())
        for line in lines(rec, float(current.section("autofix")["penalty"])):
            echo(line)
        if not rec.retry or rec.chosen is None:
            if error is not None:
                raise error
            assert result is not None
            return result
        if rec.backoff_s:
            echo(f"waiting {rec.backoff_s:g} s before retry {number + 1} of {retries}")
            sleep(rec.backoff_s)
        else:
            echo(f"retry {number + 1} of {retries}")
        current = knobs.apply(current, record.step, rec.chosen.settings)
        applied, previous = remediation(rec), record
        number += 1
