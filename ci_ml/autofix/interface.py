"""autofix: what a step run leaves in the history, how a failure is classified, and what a
retry is predicted to do.

Plug points (each an ABC with one implementation beside it):
``History`` (where run records live: ``history.JsonlHistory``), ``Classifier`` (failure
-> class: ``classify.RuleClassifier`` over the rules table ``rules.yaml``), ``RunModel``
(settings -> P(success), minutes: ``model.NeedModel``, fitted on the history).
"""

from __future__ import annotations

import enum
import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from ci_ml.errors import CiMlError, UsageError
from ci_ml.limits.interface import Enforcement, Usage

RECORD_VERSION = 1


class Remedy(enum.Enum):
    """What kind of retry a failure class admits."""

    RESOURCE = "resource"            # another configuration may succeed: the model chooses
    TRANSIENT = "transient"          # the same configuration after a bounded backoff
    DETERMINISTIC = "deterministic"  # a retry fails the same way: never retried
    UNKNOWN = "unknown"              # the model alone decides whether a retry is worth it


class FailureClass(enum.Enum):
    OUT_OF_MEMORY = "out-of-memory"
    TIMEOUT = "timeout"
    RESOURCE_EXHAUSTED = "resource-exhausted"   # disk space, file size, file handles
    TRANSIENT = "transient"                     # network, registry 5xx, lock timeout
    BAD_INPUT = "bad-input"                     # bad input or config (exit 2)
    CODE_ERROR = "code-error"                   # a traceback in user or ci-ml code
    TOOL_MISSING = "tool-missing"
    UNKNOWN = "unknown"

    @property
    def remedy(self) -> Remedy:
        return _REMEDIES[self]

    @property
    def label(self) -> str:
        return self.value.replace("-", " ")


_REMEDIES = {
    FailureClass.OUT_OF_MEMORY: Remedy.RESOURCE,
    FailureClass.TIMEOUT: Remedy.RESOURCE,
    FailureClass.RESOURCE_EXHAUSTED: Remedy.RESOURCE,
    FailureClass.TRANSIENT: Remedy.TRANSIENT,
    FailureClass.BAD_INPUT: Remedy.DETERMINISTIC,
    FailureClass.CODE_ERROR: Remedy.DETERMINISTIC,
    FailureClass.TOOL_MISSING: Remedy.DETERMINISTIC,
    FailureClass.UNKNOWN: Remedy.UNKNOWN,
}


class AutofixError(CiMlError):
    """autofix could not do what was asked (exit 3 unless a subclass says otherwise)."""


class NothingToFix(UsageError):
    """No history, no failed run, or a run that cannot be retried from here (exit 2)."""


@dataclass(frozen=True)
class Failure:
    """The evidence a classifier sees: how the run ended and the end of its log."""

    exit_code: int | None
    signal: str | None
    timed_out: bool = False
    oom_killed: bool = False
    memory_limited: bool = False
    log: str = ""


@dataclass(frozen=True)
class Classification:
    failure_class: FailureClass
    rule: str              # the id of the rule that matched ("fallback" when none did)
    evidence: str = ""     # the line (or exit status) the rule matched

    def to_json(self) -> dict[str, str]:
        return {"class": self.failure_class.value, "rule": self.rule, "evidence": self.evidence}

    @classmethod
    def from_json(cls, data: Any) -> Classification | None:
        if not isinstance(data, Mapping):
            return None
        try:
            return cls(FailureClass(data.get("class")), str(data.get("rule", "")),
                       str(data.get("evidence", "")))
        except ValueError:
            return None


@dataclass(frozen=True)
class Settings:
    """A step run's resource settings: what autofix may change for a retry.

    ``batch_size`` is the optimizer's (effective) batch; it is processed in
    ``accumulation_steps`` micro-batches whose gradients are accumulated, so changing
    the accumulation keeps what is learned and changes the memory it takes. ``None``
    means the setting does not apply to the step (or no limit is set).
    """

    memory_mb: int | None = None
    timeout_s: float | None = None
    open_files: int | None = None
    file_size_mb: int | None = None
    batch_size: int | None = None
    accumulation_steps: int | None = None
    threads: int | None = None
    nproc: int | None = None

    @property
    def micro_batch(self) -> int | None:
        if self.batch_size is None:
            return None
        return max(1, math.ceil(self.batch_size / max(self.accumulation_steps or 1, 1)))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> Settings:
        if not isinstance(data, Mapping):
            return cls()
        values: dict[str, Any] = {}
        for f in fields(cls):
            value = data.get(f.name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            values[f.name] = float(value) if f.name == "timeout_s" else int(value)
        return cls(**values)

    def changes_from(self, other: Settings) -> dict[str, tuple[Any, Any]]:
        """{setting: (other's value, this value)} for every setting that differs."""
        return {f.name: (getattr(other, f.name), getattr(self, f.name)) for f in fields(self)
                if getattr(other, f.name) != getattr(self, f.name)}

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)


@dataclass(frozen=True)
class RunRecord:
    """One line of the run history: one step run (never a cache hit), however it ended."""

    id: str
    ts: str                      # RFC 3339 UTC, when the run ended
    run_id: str                  # one `ci-ml` invocation (or CI job attempt)
    attempt: int                 # 0 for the first run of the step in run_id, then retries
    writer: str                  # local, or the CI job that wrote the line
    project: str
    step: str
    key: str                     # the step's cache key (inputs, config, tools)
    settings: Settings
    input_bytes: int
    usage: Usage
    enforcement: Enforcement
    isolated: bool               # ran in its own process (limits enforceable)
    exit_code: int | None
    signal: str | None
    timed_out: bool
    oom_killed: bool
    status: str                  # passed | blocked | failed
    failure: Classification | None = None
    message: str = ""            # ci-ml's one-line error, when the run failed
    log_tail: str = ""           # the end of the log, failed runs only
    remediation: Mapping[str, Any] | None = None   # what autofix changed for this attempt
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status in ("passed", "blocked")

    @property
    def cached(self) -> bool:
        """A retry the step cache answered: it closes the failure but measured nothing."""
        return self.extra.get("cached") is True

    def failure_evidence(self) -> Failure:
        return Failure(self.exit_code, self.signal, self.timed_out, self.oom_killed,
                       self.settings.memory_mb is not None,
                       "\n".join(p for p in (self.log_tail, self.message and
                                             f"error: {self.message}") if p))

    def to_json(self) -> dict[str, Any]:
        return {
            "v": RECORD_VERSION, "id": self.id, "ts": self.ts, "run_id": self.run_id,
            "attempt": self.attempt, "writer": self.writer, "project": self.project,
            "step": self.step, "key": self.key, "settings": self.settings.to_json(),
            "input_bytes": self.input_bytes, "usage": self.usage.to_json(),
            "enforcement": self.enforcement.value, "isolated": self.isolated,
            "exit_code": self.exit_code, "signal": self.signal, "timed_out": self.timed_out,
            "oom_killed": self.oom_killed, "status": self.status,
            "failure": self.failure.to_json() if self.failure else None,
            "message": self.message, "log_tail": self.log_tail,
            "remediation": dict(self.remediation) if self.remediation else None,
            **({"extra": dict(self.extra)} if self.extra else {}),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunRecord:
        """Strict about identity and outcome (a line without them is skipped by the
        reader); lenient about measurements, which default to zero."""
        def text(key: str) -> str:
            value = data.get(key)
            if not isinstance(value, str) or not value:
                raise ValueError(f"missing {key}")
            return value

        status = text("status")
        if status not in ("passed", "blocked", "failed"):
            raise ValueError(f"bad status {status!r}")
        exit_code = data.get("exit_code")
        sig = data.get("signal")
        remediation = data.get("remediation")
        extra = data.get("extra")
        try:
            enforcement = Enforcement(data.get("enforcement", "none"))
        except ValueError:
            enforcement = Enforcement.NONE
        return cls(
            id=text("id"), ts=text("ts"), run_id=text("run_id"),
            attempt=_int(data.get("attempt")), writer=str(data.get("writer") or "unknown"),
            project=str(data.get("project") or ""), step=text("step"),
            key=str(data.get("key") or ""), settings=Settings.from_json(data.get("settings")),
            input_bytes=_int(data.get("input_bytes")), usage=Usage.from_json(data.get("usage")),
            enforcement=enforcement, isolated=bool(data.get("isolated")),
            exit_code=exit_code if isinstance(exit_code, int) and
            not isinstance(exit_code, bool) else None,
            signal=sig if isinstance(sig, str) else None,
            timed_out=data.get("timed_out") is True, oom_killed=data.get("oom_killed") is True,
            status=status, failure=Classification.from_json(data.get("failure")),
            message=str(data.get("message") or ""), log_tail=str(data.get("log_tail") or ""),
            remediation=remediation if isinstance(remediation, Mapping) else None,
            extra=extra if isinstance(extra, Mapping) else {},
        )


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) \
        and math.isfinite(value) else 0


@dataclass(frozen=True)
class Prediction:
    """What the model expects of a run with some settings."""

    p_success: float
    minutes: float       # expected wall time of the run
    cost: float          # expected compute cost of the run, in the configured currency
    objective: float     # P(fail) * penalty + cost: lower is better
    detail: Mapping[str, float] = field(default_factory=dict)   # per-resource P(enough)


@dataclass(frozen=True)
class Candidate:
    settings: Settings
    prediction: Prediction
    changes: Mapping[str, tuple[Any, Any]] = field(default_factory=dict)


class Action(enum.Enum):
    RETRY = "retry"              # retry with ``chosen`` (possibly the same settings)
    DO_NOT_RETRY = "do-not-retry"


@dataclass(frozen=True)
class Recommendation:
    record: RunRecord                 # the failed run this is about
    classification: Classification
    action: Action
    reason: str
    chosen: Candidate | None = None
    current: Candidate | None = None  # the failed settings, scored by the same model
    ranked: tuple[Candidate, ...] = ()
    backoff_s: float = 0.0            # wait before a transient retry
    history_runs: int = 0             # records of this step the model was fitted on

    @property
    def retry(self) -> bool:
        return self.action is Action.RETRY and self.chosen is not None


class History(ABC):
    """Append-only store of run records, safe under concurrent writers."""

    @abstractmethod
    def append(self, record: RunRecord) -> None: ...

    @abstractmethod
    def records(self) -> list[RunRecord]:
        """Every readable record, oldest first (unreadable lines are skipped, and counted)."""


class Classifier(ABC):
    @abstractmethod
    def classify(self, failure: Failure) -> Classification: ...


class RunModel(ABC):
    """P(success) and expected minutes of a step's run with given settings."""

    @abstractmethod
    def fit(self, records: Iterable[RunRecord]) -> RunModel: ...

    @abstractmethod
    def predict(self, step: str, settings: Sequence[Settings], input_bytes: int,
                failed: RunRecord | None = None) -> list[tuple[float, float, dict[str, float]]]:
        """(P(success), minutes, per-resource detail) for each settings, in order."""
