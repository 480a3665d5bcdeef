"""Running a step the cache did not answer, and recording the run in the run history.

A step with a limit (``limits``, ``limits.steps.<step>``) runs in its own process,
``ci_ml.pipeline.worker``, under ``ci_ml.limits.run_limited``: the limits are
enforced by the kernel, and a step the kernel kills is a failed step ci-ml reports
and records, not the end of ci-ml. A step without limits runs in this process
(unless ``limits.isolate: always``), measured with ``getrusage``. Either way one
line goes to the run history (docs/autofix.md); a cache hit writes nothing, and
nothing here is imported by a fully cached run.
"""

from __future__ import annotations

import codecs
import contextlib
import json
import os
import resource
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import ci_ml
from ci_ml.config import Config
from ci_ml.errors import EXIT_TOOL, CiMlError, ConfigError
from ci_ml.pipeline.interface import Step, StepContext, StepInputs, StepOutcome, StepStatus

if TYPE_CHECKING:
    from ci_ml.autofix.interface import RunRecord, Settings
    from ci_ml.autofix.record import Ending
    from ci_ml.limits import Enforcement, ProcessResult, Usage

_SELECTION: ContextVar[tuple[str, ...] | None] = ContextVar("ci_ml_selection", default=None)
RETRY_HINT = ("`ci-ml autofix` recommends a retry configuration for it "
              "(`ci-ml run --autofix N` retries by itself)")


class StepRunFailed(CiMlError):
    """A step run failed; carries its run-history record for autofix."""

    def __init__(self, message: str, *, exit_code: int, record: RunRecord | None = None,
                 hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.exit_code = exit_code
        self.record = record


def note_selection(only: Sequence[str] | None) -> None:
    """Remember which steps the invocation asked for (``--apply`` re-runs the same)."""
    _SELECTION.set(tuple(only) if only else None)


def check_limits(config: Config, step_names: Sequence[str]) -> None:
    """Before anything runs: limits need a process of their own."""
    if config.section("limits")["isolate"] != "never":
        return
    from ci_ml.autofix.knobs import step_limit_values

    for name in step_names:
        for key, value in step_limit_values(config, name).items():
            if value is not None:
                raise ConfigError(f"{config.path}: limits.isolate is 'never' but step {name!r} "
                                  f"has limit {key}={value}: a limit needs the step to run in "
                                  "its own process")


def execute(step: Step, ctx: StepContext, declared: StepInputs, key: str) -> StepOutcome:
    from ci_ml.autofix.knobs import limits_of, settings_of

    settings = settings_of(ctx.config, step.name)
    mode = ctx.config.section("limits")["isolate"]
    if mode == "always" or (mode == "auto" and limits_of(settings).any):
        return _in_worker(step, ctx, declared, key, settings)
    return _in_process(step, ctx, declared, key, settings)


def _record(step: Step, ctx: StepContext, declared: StepInputs, key: str, settings: Settings,
            usage: Usage, enforcement: Enforcement, isolated: bool,
            ending: Ending) -> RunRecord | None:
    """Append the run to the history; a history that cannot be written never fails a step."""
    from ci_ml.autofix.record import input_bytes, make_record, write_record

    record = make_record(ctx.config, step.name, key, settings, input_bytes(declared.files),
                         usage, enforcement, isolated, ending,
                         extra={"stage": ctx.stage, "only": _SELECTION.get(),
                                "config_sha256": ctx.config.digest(),
                                "ci_ml": ci_ml.__version__})
    try:
        return write_record(ctx.config, record)
    except (OSError, CiMlError) as exc:
        ctx.reporter.warn(f"run history not written: {exc}")
        return record


def _ending(outcome: StepOutcome, log_tail: str = "") -> Ending:
    """A step that returned: passed or blocked, or failed when its tool failed (ERROR)."""
    from ci_ml.autofix.record import Ending

    if outcome.status is StepStatus.ERROR:
        return Ending("failed", EXIT_TOOL, message=outcome.summary,
                      log_tail=f"{log_tail}error: {outcome.summary}\n")
    return Ending("blocked" if outcome.status is StepStatus.BLOCKED else "passed", 0)


def _cpu_now() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _reset_peak_rss() -> bool:
    # Linux resets VmHWM (the peak RSS) when "5" is written to clear_refs.
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _own_peak_rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _in_process(step: Step, ctx: StepContext, declared: StepInputs, key: str,
                settings: Settings) -> StepOutcome:
    from ci_ml.autofix.record import Ending
    from ci_ml.limits import Enforcement, Usage

    _reset_peak_rss()
    started, cpu0 = time.perf_counter(), _cpu_now()
    kids_peak0 = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss

    def usage() -> Usage:
        own = 0
        with contextlib.suppress(OSError, ValueError):
            own = _own_peak_rss()
        kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        peak = max(own, kids * 1024 if kids > kids_peak0 else 0)
        return Usage(peak_rss_bytes=peak, cpu_s=_cpu_now() - cpu0,
                     wall_s=time.perf_counter() - started)

    def record(ending: Ending) -> RunRecord | None:
        return _record(step, ctx, declared, key, settings, usage(), Enforcement.NONE, False,
                       ending)

    try:
        outcome = step.run(ctx)
    except CiMlError as exc:
        record(Ending("failed", exc.exit_code, message=exc.message,
                      log_tail=f"error: {exc.message}\n"))
        raise
    except Exception as exc:
        # A crash in user code (a model factory) or in ci-ml: the traceback says which.
        trace = traceback.format_exc()
        if not ctx.reporter.quiet:
            ctx.reporter.stream.write(trace)
        message = f"crashed: {type(exc).__name__}: {exc}"[:500]
        rec = record(Ending("failed", EXIT_TOOL, message=message, log_tail=trace))
        raise StepRunFailed(f"{message} (the traceback is above)", exit_code=EXIT_TOOL,
                            record=rec) from exc
    record(_ending(outcome))
    return outcome


class _TextSink:
    """The worker's output, decoded as it comes, into the reporter's text stream."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def write(self, data: bytes, /) -> int:
        self.stream.write(self.decoder.decode(data))
        return len(data)

    def flush(self) -> None:
        self.stream.flush()


def _worker_env() -> dict[str, str]:
    env = dict(os.environ)
    # The worker imports the same ci_ml as this process, installed or not.
    here = str(Path(ci_ml.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
    return env


def _in_worker(step: Step, ctx: StepContext, declared: StepInputs, key: str,
               settings: Settings) -> StepOutcome:
    from ci_ml.autofix.knobs import limits_of
    from ci_ml.autofix.record import Ending
    from ci_ml.limits import run_limited

    with tempfile.TemporaryDirectory(prefix="ci-ml-step-") as tmp:
        spec = Path(tmp) / "spec.json"
        result_file = Path(tmp) / "result.json"
        spec.write_text(json.dumps({
            "config_path": str(ctx.config.path), "config_data": ctx.config.data,
            "step": step.name, "out_dir": str(ctx.out_dir.resolve()),
            "staging": str(ctx.staging.resolve()), "stage": ctx.stage,
            "force": ctx.force, "quiet": ctx.reporter.quiet, "result": str(result_file),
        }, default=str), "utf-8")
        result = run_limited([sys.executable, "-m", "ci_ml.pipeline.worker", str(spec)],
                             limits_of(settings), env=_worker_env(),
                             echo=None if ctx.reporter.quiet else _TextSink(ctx.reporter.stream))
        try:
            payload = json.loads(result_file.read_text("utf-8"))
        except (OSError, ValueError):
            payload = {}
    if result.exit_code == 0 and not result.timed_out and "outcome" in payload:
        outcome = StepOutcome.from_json(payload["outcome"])
        _record(step, ctx, declared, key, settings, result.usage, result.enforcement, True,
                _ending(outcome, result.log_tail))
        return outcome
    error = payload.get("error") if isinstance(payload.get("error"), dict) else None
    message = _failure_message(result, error, payload.get("crash"))
    record = _record(step, ctx, declared, key, settings, result.usage, result.enforcement, True,
                     Ending("failed", result.exit_code, result.signal_name, result.timed_out,
                            result.oom_killed, message, result.log_tail))
    exit_code = EXIT_TOOL
    hint = error.get("hint") if error else None
    if error and isinstance(error.get("exit_code"), int) and not result.timed_out:
        exit_code = int(error["exit_code"])
    if record is not None and record.failure is not None:
        from ci_ml.autofix.interface import Remedy

        klass = record.failure.failure_class
        if error is None:
            message = f"{klass.label}: {message}"
        if klass.remedy in (Remedy.RESOURCE, Remedy.TRANSIENT) and hint is None:
            hint = RETRY_HINT
    raise StepRunFailed(message, exit_code=exit_code, record=record, hint=hint)


def _failure_message(result: ProcessResult, error: dict[str, Any] | None, crash: Any) -> str:
    if error is not None and not result.timed_out:
        return str(error.get("message") or "failed")
    peak = result.usage.peak_rss_bytes >> 20
    if result.oom_killed:
        return result.describe()
    if result.timed_out or result.signal is not None:
        return f"{result.describe()}; peak memory {peak} MiB"
    if crash:
        return f"crashed: {crash} (the traceback is above)"
    return f"{result.describe()}; peak memory {peak} MiB"
