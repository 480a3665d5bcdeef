"""Writing a step run into the run history: which run and attempt it belongs to, where
the history lives, and the record itself (classified when the run failed)."""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ci_ml.autofix.classify import RuleClassifier
from ci_ml.autofix.history import JsonlHistory
from ci_ml.autofix.interface import RunRecord, Settings
from ci_ml.config import Config
from ci_ml.limits.interface import Enforcement, Usage

HISTORY_ENV = "CI_ML_HISTORY"
RUN_ID_ENV = "CI_ML_RUN_ID"
HISTORY_DIR = "history"
# Failed runs keep the end of their log for `ci-ml autofix`; passed runs keep none.
LOG_TAIL_CHARS = 8000


@dataclass(frozen=True)
class Attempt:
    run_id: str
    attempt: int = 0
    remediation: Mapping[str, Any] | None = None


def _default_run_id() -> str:
    explicit = os.environ.get(RUN_ID_ENV)
    if explicit:
        return explicit
    return uuid.uuid4().hex[:16]


_PROCESS_RUN_ID = _default_run_id()
_CURRENT: ContextVar[Attempt | None] = ContextVar("ci_ml_attempt", default=None)


def current_attempt() -> Attempt:
    return _CURRENT.get() or Attempt(_PROCESS_RUN_ID)


@contextlib.contextmanager
def attempt(value: Attempt) -> Iterator[Attempt]:
    token = _CURRENT.set(value)
    try:
        yield value
    finally:
        _CURRENT.reset(token)


def history_dir(config: Config) -> Path:
    """``$CI_ML_HISTORY``, else ``autofix.history``, else ``history/`` in the step cache."""
    env = os.environ.get(HISTORY_ENV)
    if env:
        return Path(env).resolve()
    configured = config.section("autofix").get("history")
    if configured:
        return config.resolve(str(configured))
    from ci_ml.pipeline.runner import cache_root

    return cache_root(config) / HISTORY_DIR


def open_history(config: Config) -> JsonlHistory:
    return JsonlHistory(history_dir(config))


@dataclass(frozen=True)
class Ending:
    """How a step run ended, as the executor saw it."""

    status: str                 # passed | blocked | failed
    exit_code: int | None
    signal: str | None = None
    timed_out: bool = False
    oom_killed: bool = False
    message: str = ""
    log_tail: str = ""


_SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSW|PASSPHRASE|API_?KEY|PRIVATE|CREDENTIAL|AUTH",
                          re.IGNORECASE)


def redact(text: str, env: Mapping[str, str] | None = None) -> str:
    """The text with the values of secret-looking environment variables masked.

    CI masks secrets in its logs, not in artifacts; the history travels in the cache
    artifact, so a log tail that printed a token must not carry it there.
    """
    values = sorted({v for k, v in (os.environ if env is None else env).items()
                     if _SECRET_NAME.search(k) and len(v) >= 6}, key=len, reverse=True)
    for value in values:
        text = text.replace(value, "***")
    return text


def make_record(config: Config, step: str, key: str, settings: Settings, input_bytes: int,
                usage: Usage, enforcement: Enforcement, isolated: bool, ending: Ending,
                extra: Mapping[str, Any] | None = None) -> RunRecord:
    now = current_attempt()
    failed = ending.status == "failed"
    record = RunRecord(
        id=uuid.uuid4().hex, ts=datetime.now(UTC).isoformat(timespec="milliseconds"),
        run_id=now.run_id, attempt=now.attempt, writer="", project=config.project_name,
        step=step, key=key, settings=settings, input_bytes=input_bytes, usage=usage,
        enforcement=enforcement, isolated=isolated, exit_code=ending.exit_code,
        signal=ending.signal, timed_out=ending.timed_out, oom_killed=ending.oom_killed,
        status=ending.status, message=redact(ending.message) if failed else "",
        log_tail=redact(ending.log_tail[-LOG_TAIL_CHARS:]) if failed else "",
        remediation=now.remediation, extra=dict(extra or {}),
    )
    if failed:
        from dataclasses import replace

        record = replace(record, failure=RuleClassifier().classify(record.failure_evidence()))
    return record


def write_record(config: Config, record: RunRecord) -> RunRecord:
    """Append to the history; the writer's id is filled in here."""
    from dataclasses import replace

    history = open_history(config)
    record = replace(record, writer=history.writer)
    history.append(record)
    return record


def input_bytes(paths: Any) -> int:
    """Total size of a step's declared input files (directories: every file under them)."""
    from ci_ml.fsutil import iter_files

    total = 0
    for path in paths:
        try:
            total += sum(f.stat().st_size for f in iter_files(Path(path)))
        except OSError:
            continue
    return total
