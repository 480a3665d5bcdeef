"""From a failed run to a recommendation: never retry what fails the same way again,
back off and retry what is transient, and let the model choose everything else."""

from __future__ import annotations

from collections.abc import Sequence

from ci_ml.autofix.classify import RuleClassifier
from ci_ml.autofix.interface import (
    Action,
    Candidate,
    Classification,
    FailureClass,
    NothingToFix,
    Recommendation,
    Remedy,
    RunModel,
    RunRecord,
)
from ci_ml.autofix.model import NeedModel
from ci_ml.autofix.optimize import Bounds, Prices, best, candidates, score
from ci_ml.config import Config

# Transient failures: this many retries of the same step in one run, then it is an outage.
TRANSIENT_RETRIES = 3
_WHY_NOT = {
    FailureClass.BAD_INPUT: "bad input or config is deterministic: a retry would read the same "
                            "input and fail the same way; fix what the error line names",
    FailureClass.CODE_ERROR: "a code error is deterministic: a retry would run the same code and "
                             "fail the same way; fix the code (the traceback shows where)",
    FailureClass.TOOL_MISSING: "a missing tool is deterministic: a retry would not find it "
                               "either; install it where the step runs",
}


def classify(record: RunRecord) -> Classification:
    """The record's class under today's rules (the table may have grown since it was written)."""
    return RuleClassifier().classify(record.failure_evidence())


def last_failed(records: Sequence[RunRecord], project: str, writer: str | None = None,
                run_id: str | None = None) -> RunRecord:
    """The failed run to fix: the last failed step of the latest run (of this writer).

    A run whose latest record for a step passed (a retry succeeded) has nothing to fix.
    """
    mine = [r for r in records if r.project == project and (writer is None or r.writer == writer)]
    if run_id is not None:
        mine = [r for r in mine if r.run_id == run_id]
        if not mine:
            raise NothingToFix(f"run {run_id!r} is not in the run history")
    if not mine:
        raise NothingToFix(f"no step run of project {project!r} in the run history"
                           + (f" written by {writer}" if writer else ""))
    latest = mine[-1].run_id if run_id is None else run_id
    run = [r for r in mine if r.run_id == latest]
    last_by_step: dict[str, RunRecord] = {}
    for r in run:
        last_by_step[r.step] = r
    failed = [r for r in last_by_step.values() if not r.ok]
    if not failed:
        raise NothingToFix(f"the last run ({latest}) has no failed step", hint="nothing to fix")
    return max(failed, key=lambda r: (r.ts, r.attempt))


def recommend(config: Config, failed: RunRecord, records: Sequence[RunRecord],
              model: RunModel | None = None) -> Recommendation:
    section = config.section("autofix")
    prices = Prices.from_section(section)
    min_success = float(section["min_success"])
    classification = classify(failed)
    klass = classification.failure_class
    # The failed run is in the fit: it is a censored observation (it needed more than it had).
    fitted = (model or NeedModel()).fit(records if any(r.id == failed.id for r in records)
                                        else [*records, failed])
    runs = fitted.runs(failed.project, failed.step) if isinstance(fitted, NeedModel) else 0
    if klass.remedy is Remedy.DETERMINISTIC:
        return Recommendation(failed, classification, Action.DO_NOT_RETRY,
                              f"not retried: {_WHY_NOT[klass]}", history_runs=runs)
    if klass.remedy is Remedy.TRANSIENT:
        return _transient(config, failed, classification, records, fitted, prices, runs)
    settings = candidates(failed.settings, klass, Bounds.from_section(section))
    if klass.remedy is Remedy.UNKNOWN:
        settings = settings[:1]   # nothing says a resource was short: only a plain retry
    ranked = best(score(fitted, failed, settings, prices))
    current = next(c for c in ranked if not c.changes)
    chosen = ranked[0]
    p = chosen.prediction
    if p.p_success < min_success or p.objective >= prices.penalty:
        why = (f"expected cost of retrying ({p.objective:.4f}) is not below the penalty of a "
               f"failure ({prices.penalty:g})" if p.objective >= prices.penalty else
               f"predicted P(success) {p.p_success:.2f} < autofix.min_success {min_success:g}")
        subject = "an unclassified failure" if klass is FailureClass.UNKNOWN else \
            f"{klass.label}: no configuration within the bounds is likely enough to succeed"
        return Recommendation(failed, classification, Action.DO_NOT_RETRY,
                              f"not retried ({subject}): {why}", chosen, current, tuple(ranked),
                              history_runs=runs)
    reason = (f"{klass.label}: the retry minimizing P(fail) x penalty + cost"
              if klass is not FailureClass.UNKNOWN else
              "unclassified failure: the model predicts a plain retry is worth it")
    return Recommendation(failed, classification, Action.RETRY, reason, chosen, current,
                          tuple(ranked), history_runs=runs)


def _transient(config: Config, failed: RunRecord, classification: Classification,
               records: Sequence[RunRecord], model: RunModel, prices: Prices,
               runs: int) -> Recommendation:
    section = config.section("autofix")
    earlier = [r for r in records if r.run_id == failed.run_id and r.step == failed.step
               and not r.ok and r.failure is not None
               and r.failure.failure_class is FailureClass.TRANSIENT]
    retries = max(len(earlier) - 1, 0) if any(r.id == failed.id for r in earlier) \
        else len(earlier)
    scored = score(model, failed, [failed.settings], prices)
    # The failure was the network's, not the configuration's: what the model predicts
    # for the run itself, minus the failure just seen.
    current: Candidate = scored[0]
    if retries >= TRANSIENT_RETRIES:
        return Recommendation(failed, classification, Action.DO_NOT_RETRY,
                              f"not retried: transient failure {retries + 1} times in this run; "
                              "the service looks down, not flaky", current=current,
                              history_runs=runs)
    backoff = min(float(section["backoff_s"]) * (2 ** retries), float(section["max_backoff_s"]))
    return Recommendation(failed, classification, Action.RETRY,
                          f"transient failure: the same configuration after {backoff:g} s "
                          f"(retry {retries + 1} of at most {TRANSIENT_RETRIES})",
                          current, current, (current,), backoff_s=backoff, history_runs=runs)
