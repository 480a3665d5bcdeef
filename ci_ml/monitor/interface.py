"""Monitoring: the value types, the adapter interfaces and the family's base error.

``ci-ml monitor`` compares a window of served traffic (the server's sampled request
log, plus labels that arrive later) with the training reference stored with the
model, asks Prometheus how the service did against its SLOs, and decides whether
retraining is due. The pieces behind interfaces here:

- ``ReferenceSource``: where the training reference comes from (the profile stored
  with the model, or one computed from the training data the config names);
- ``HealthSource``: service health over the window (Prometheus, or the request log);
- ``Trigger``: how the training pipeline is started (GitHub, GitLab).

Everything a run produces is a frozen value; the decision is a pure function of them.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from ci_ml.errors import CiMlError, InputError, ToolError

REPORT_NAME = "monitor-report.json"
HTML_NAME = "monitor.html"
FINDING_SCANNER = "monitoring"   # the Finding category of every monitoring finding


class MonitorError(CiMlError):
    """Root of monitoring errors (exit 3 unless a subclass says otherwise)."""


class MonitorInputError(MonitorError, InputError):
    """A log, labels or reference file that cannot be used at all (exit 2)."""


class HealthError(MonitorError, ToolError):
    """Prometheus did not answer, or answered something that is not a PromQL result (exit 3)."""


class TriggerError(MonitorError, ToolError):
    """The CI system refused or did not answer the retraining trigger (exit 3)."""


class ColumnKind(enum.Enum):
    NUMBER = "number"
    CATEGORY = "category"


class Task(enum.Enum):
    CLASSIFICATION = "classification"
    REGRESSION = "regression"


# -------------------------------------------------------------------- the reference

@dataclass(frozen=True)
class Histogram:
    """Counts of a numeric column on fixed cut points.

    Bin ``i`` holds values in ``(edges[i-1], edges[i]]``; bin 0 is everything up to
    ``edges[0]`` and the last bin everything above ``edges[-1]``. References put
    ``edges[0]`` just below the training minimum and ``edges[-1]`` at its maximum, so
    the first and last bins hold only values outside the training range.
    """

    edges: tuple[float, ...]
    counts: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.counts) != len(self.edges) + 1:
            raise ValueError(f"{len(self.edges)} edges need {len(self.edges) + 1} counts, "
                             f"got {len(self.counts)}")

    @property
    def total(self) -> int:
        return sum(self.counts)


@dataclass(frozen=True)
class ColumnReference:
    """One feature as the model saw it in training."""

    name: str
    kind: ColumnKind
    count: int                                   # non-missing values
    missing: int
    histogram: Histogram | None = None           # numbers
    categories: Mapping[str, int] = field(default_factory=dict)   # categories: value -> count
    minimum: float | None = None
    maximum: float | None = None
    mean: float | None = None
    std: float | None = None
    # False when the reference lists only the frequent categories: then a value missing
    # from the list may have been seen in training, and is not called new.
    complete: bool = True


@dataclass(frozen=True)
class PredictionReference:
    """What the model predicted on reference data: class counts, or a value histogram."""

    task: Task
    classes: Mapping[str, int] = field(default_factory=dict)
    values: Histogram | None = None
    source: str = ""          # e.g. "model on data.test", "target of data.train"


@dataclass(frozen=True)
class Reference:
    columns: tuple[ColumnReference, ...]
    rows: int
    source: str                          # where it came from, for the report
    task: Task = Task.CLASSIFICATION
    predictions: PredictionReference | None = None
    # The model's quality on held-out data (metrics.json): accuracy, or mae/rmse.
    metrics: Mapping[str, float] = field(default_factory=dict)
    metric_rows: int = 0
    feature_order: tuple[str, ...] = ()  # how positional (list) inputs map to columns

    def column(self, name: str) -> ColumnReference | None:
        return next((c for c in self.columns if c.name == name), None)


class ReferenceSource(ABC):
    """Gives the training reference of the monitored model."""

    @abstractmethod
    def load(self) -> Reference:
        """The reference; raises MonitorInputError when it cannot be had."""


# -------------------------------------------------------------------- what was measured

@dataclass(frozen=True)
class InputStats:
    """What reading the log and the labels found, good and bad."""

    files: tuple[str, ...] = ()
    lines: int = 0
    in_window: int = 0            # lines of the monitored model inside the window
    rows: int = 0                 # feature rows (a batched request holds several)
    outside_window: int = 0
    corrupt: int = 0              # not JSON, truncated, not the log's schema
    corrupt_examples: tuple[str, ...] = ()   # "file:line: why"
    other_model: int = 0          # lines from another model digest or version
    other_models: Mapping[str, int] = field(default_factory=dict)
    failed: int = 0               # answered with a non-2xx status (no outputs)
    bad_rows: int = 0             # rows whose shape does not match the model's features
    labels: int = 0               # label rows read
    labels_matched: int = 0
    labels_unknown: int = 0       # label ids that no logged request carries
    labels_unknown_examples: tuple[str, ...] = ()
    labels_bad: int = 0           # label rows that do not parse
    labels_duplicate: int = 0


@dataclass(frozen=True)
class ColumnDrift:
    name: str
    kind: ColumnKind
    test: str                     # "ks" or "chi2"
    statistic: float
    p_value: float
    p_adjusted: float
    psi: float
    rows: int                     # non-missing window values
    missing_share: float
    reference_missing_share: float
    unseen_share: float           # categories never seen in training / numbers out of range
    unseen_examples: tuple[str, ...] = ()
    # Whether that share is more than training's own rate of new values explains
    # (adjusted p-value of a binomial test), and over monitor.unseen.max_share.
    unseen_p: float = 1.0
    unseen: bool = False
    window_mean: float | None = None
    reference_mean: float | None = None
    drifted: bool = False
    # Plot data: reference and window shares on the PSI bins (labels, ref, window).
    bins: tuple[str, ...] = ()
    reference_shares: tuple[float, ...] = ()
    window_shares: tuple[float, ...] = ()


@dataclass(frozen=True)
class PredictionDrift:
    task: Task
    test: str
    statistic: float
    p_value: float
    psi: float
    rows: int
    drifted: bool
    reference_source: str
    bins: tuple[str, ...] = ()
    reference_shares: tuple[float, ...] = ()
    window_shares: tuple[float, ...] = ()


@dataclass(frozen=True)
class Quality:
    """Accuracy (classification) or mean absolute error (regression) on late labels."""

    metric: str                   # "accuracy" or "mae"
    value: float
    reference: float | None
    labels: int
    p_value: float | None
    degraded: bool


@dataclass(frozen=True)
class SloCheck:
    name: str                     # "error_rate", "latency_p99"
    value: float | None           # None: no data
    limit: float
    unit: str
    breached: bool


@dataclass(frozen=True)
class ServiceHealth:
    source: str                   # "prometheus http://...", "request log (sampled)"
    requests: float | None
    checks: tuple[SloCheck, ...]
    note: str = ""


class HealthSource(ABC):
    """Service health (error rate, latency quantiles) over a window."""

    name: ClassVar[str]

    @abstractmethod
    def health(self, start: datetime, end: datetime) -> ServiceHealth:
        """Measure; raises HealthError when the source cannot answer."""


# -------------------------------------------------------------------- the decision

class Action(enum.Enum):
    RETRAIN = "retrain"     # the model no longer fits the traffic: train again
    ALERT = "alert"         # the service misbehaves: retraining would not help


class Status(enum.Enum):
    OK = "ok"
    RETRAIN = "retrain"
    ALERT = "alert"
    INSUFFICIENT_DATA = "insufficient_data"


@dataclass(frozen=True)
class Reason:
    """One machine-readable reason for the decision."""

    code: str                 # feature_drift, prediction_drift, unseen_values, quality, slo
    subject: str              # the feature, "predictions", "accuracy", "latency_p99", ...
    action: Action
    value: float
    threshold: float
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "subject": self.subject, "action": self.action.value,
                "value": _round(self.value), "threshold": self.threshold,
                "message": self.message}


@dataclass(frozen=True)
class Decision:
    status: Status
    reasons: tuple[Reason, ...] = ()

    @property
    def retrain(self) -> bool:
        return any(r.action is Action.RETRAIN for r in self.reasons)

    @property
    def exit_code(self) -> int:
        return 1 if self.reasons else 0

    def summary(self) -> str:
        """One line: the status and each reason's code and subject."""
        if not self.reasons:
            return self.status.value
        parts = [f"{r.code}:{r.subject}" for r in self.reasons]
        return f"{self.status.value} ({', '.join(parts)})"

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status.value, "retrain": self.retrain,
                "reasons": [r.to_json() for r in self.reasons]}


# -------------------------------------------------------------------- triggers

@dataclass(frozen=True)
class TriggerRequest:
    """What the training pipeline is started with."""

    reason: str                       # one line, e.g. the decision summary
    details: Mapping[str, Any]        # the decision as JSON (codes, subjects, values)
    ref: str | None = None


@dataclass(frozen=True)
class TriggerResult:
    kind: str
    url: str                          # the API endpoint called (no credentials)
    status: int
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "url": self.url, "status": self.status, "detail": self.detail}


class Trigger(ABC):
    """Starts the project's training pipeline in its CI system."""

    kind: ClassVar[str]

    @abstractmethod
    def fire(self, request: TriggerRequest) -> TriggerResult:
        """Call the CI system's API; raises TriggerError when it refuses or fails."""


def _round(value: float) -> float:
    return round(value, 6) if value == value and abs(value) != float("inf") else value
