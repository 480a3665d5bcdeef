"""Value types of the gate: the evidence it weighs, the policy, and the decision."""

from __future__ import annotations

import datetime
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ci_ml.fsutil import hash_json
from ci_ml.scan.interface import ScanResult, Severity
from ci_ml.scan.waivers import Waiver, WaiverReport


class Outcome(enum.Enum):
    PASS = "pass"  # noqa: S105 - an outcome, not a password
    BLOCK = "block"


class Direction(enum.Enum):
    HIGHER = "higher"   # higher is better (accuracy, f1, r2)
    LOWER = "lower"     # lower is better (loss, error rate, rmse)


# Metrics where lower is better; every other built-in metric is better higher.
LOWER_IS_BETTER = frozenset({"loss", "rmse", "mae", "mse", "max_error", "error_rate"})


def default_direction(metric: str) -> Direction:
    """The direction a regression rule takes when the policy does not say."""
    return Direction.LOWER if metric in LOWER_IS_BETTER else Direction.HIGHER


@dataclass(frozen=True)
class MetricBound:
    metric: str
    min: float | None = None
    max: float | None = None


@dataclass(frozen=True)
class RegressionBound:
    """How much worse than the model now in the stage a metric may be."""

    metric: str
    direction: Direction = Direction.HIGHER
    tolerance: float = 0.0
    relative: bool = False   # tolerance as a fraction of the baseline's value


# Limits read from prune-report.json: policy key -> path of keys in the report.
LIMIT_PATHS: Mapping[str, tuple[str, ...]] = {
    "latency_ms_b1": ("served", "latency_ms", "b1"),
    "latency_ms_b256": ("served", "latency_ms", "b256"),
    "onnx_bytes": ("served", "onnx_bytes"),
    "accuracy_drop": ("served", "accuracy_drop"),
}


def policy_digest(section: Mapping[str, Any]) -> str:
    """The hash of a stage's policy (defaults filled in): recorded by the gate and promote."""
    return "sha256:" + hash_json(dict(section))


def _budgets(raw: Mapping[str, Any]) -> dict[Severity, int]:
    return {Severity.parse(k): int(v) for k, v in raw.items()}


@dataclass(frozen=True)
class StagePolicy:
    stage: str
    metrics: tuple[MetricBound, ...] = ()
    regression: tuple[RegressionBound, ...] = ()
    findings: Mapping[Severity, int] = field(default_factory=dict)
    scanner_budgets: Mapping[str, Mapping[Severity, int]] = field(default_factory=dict)
    required_scans: tuple[str, ...] = ()
    data_check_required: bool = True
    limits: Mapping[str, float] = field(default_factory=dict)
    expired_waivers_block: bool = True
    require_previous_stage: bool = True
    previous_stage: str | None = None
    digest: str = ""

    @classmethod
    def from_config(cls, stage: str, section: Mapping[str, Any]) -> StagePolicy:
        previous = {"production": "staging"}.get(stage)
        return cls(
            stage=stage,
            metrics=tuple(MetricBound(name, b.get("min"), b.get("max"))
                          for name, b in sorted(section.get("metrics", {}).items())),
            regression=tuple(
                RegressionBound(name, Direction(r["direction"]) if r.get("direction")
                                else default_direction(name),
                                float(r.get("tolerance", 0.0)), bool(r.get("relative", False)))
                for name, r in sorted(section.get("regression", {}).items())),
            findings=_budgets(section.get("findings", {})),
            scanner_budgets={name: _budgets(b)
                             for name, b in sorted(section.get("scanners", {}).items())},
            required_scans=tuple(section.get("required_scans", ())),
            data_check_required=section.get("data_check", "required") == "required",
            limits={k: float(v) for k, v in sorted(section.get("limits", {}).items())
                    if v is not None},
            expired_waivers_block=section.get("expired_waivers", "block") == "block",
            require_previous_stage=bool(section.get("require_previous_stage", True)),
            previous_stage=previous,
            digest=policy_digest(section),
        )


@dataclass(frozen=True)
class StageModel:
    """The model a stage holds now, as the registry recorded it."""

    stage: str
    version: int
    digest: str
    metrics: Mapping[str, Any]


@dataclass(frozen=True)
class Evidence:
    """Everything the gate weighs, gathered by the step; ``evaluate`` does no I/O."""

    metrics: Mapping[str, Any]
    data_report: Mapping[str, Any] | None
    scans: Mapping[str, ScanResult]
    waivers: tuple[Waiver, ...] = ()
    today: datetime.date = field(default_factory=datetime.date.today)
    model_digest: str | None = None
    # The model each stage holds now (for regressions and the summary's deltas).
    stage_models: Mapping[str, StageModel] = field(default_factory=dict)
    # Per stage, the model digests it holds through a gated promotion (not forced, not
    # rolled back): production admits only what passed staging.
    passed: Mapping[str, frozenset[str]] = field(default_factory=dict)
    prune_report: Mapping[str, Any] | None = None
    # The registry's history: why it failed verification (None: it verified), whether its
    # events must be signed ("required") or signing was opted out of ("off"), and how
    # many of its events are unsigned.
    registry_problem: str | None = None
    registry_signing: str = "required"
    registry_unsigned: int = 0


@dataclass(frozen=True)
class RuleResult:
    rule: str
    category: str          # stage, metric, regression, limit, data, scan, findings, waivers
    outcome: Outcome
    message: str
    observed: Any = None
    expected: Any = None

    def to_json(self) -> dict[str, Any]:
        return {"rule": self.rule, "category": self.category, "outcome": self.outcome.value,
                "message": self.message, "observed": self.observed, "expected": self.expected}


@dataclass(frozen=True)
class Decision:
    stage: str
    rules: tuple[RuleResult, ...]
    model_digest: str | None = None
    policy_digest: str = ""
    baseline: StageModel | None = None
    waivers: WaiverReport | None = None
    today: datetime.date | None = None

    @property
    def outcome(self) -> Outcome:
        blocked = any(r.outcome is Outcome.BLOCK for r in self.rules)
        return Outcome.BLOCK if blocked else Outcome.PASS

    @property
    def passed(self) -> bool:
        return self.outcome is Outcome.PASS

    @property
    def blocking(self) -> tuple[RuleResult, ...]:
        return tuple(r for r in self.rules if r.outcome is Outcome.BLOCK)

    def waivers_json(self) -> dict[str, Any]:
        report = self.waivers
        if report is None:
            return {"applied": [], "expired": [], "expiring_soon": [], "stale": [],
                    "suppressed_findings": 0, "suppressed_in_source": []}
        uses: dict[int, tuple[Waiver, int]] = {}
        for s in report.suppressed:
            w = s.waiver
            uses[id(w)] = (w, uses.get(id(w), (w, 0))[1] + 1)
        return {
            "applied": [{**w.to_json(), "findings": n} for w, n in uses.values()],
            "expired": [w.to_json() for w in report.uncovered_expired],
            "expiring_soon": [w.to_json() for w in report.expiring],
            "stale": [w.to_json() for w in report.stale],
            "suppressed_findings": len(report.suppressed),
            # '# nosec' and tree-local bandit configs: reported, counted unless waived.
            "suppressed_in_source": [
                {"fingerprint": f.fingerprint, "id": f.id, "where": f.location.describe(),
                 "origin": f.suppressed_in_source.origin,
                 "waived_by": (c.id if (c := report.waiver_for(f)) else None)}
                for f in (*report.kept, *(x.finding for x in report.suppressed))
                if f.suppressed_in_source is not None],
        }

    def to_json(self) -> dict[str, Any]:
        base = self.baseline
        return {
            "stage": self.stage,
            "decision": self.outcome.value,
            "blocking": [r.rule for r in self.blocking],
            "model": {"digest": self.model_digest},
            "policy_sha256": self.policy_digest,
            "evaluated_on": self.today.isoformat() if self.today else None,
            "baseline": ({"stage": base.stage, "version": base.version, "digest": base.digest}
                         if base else None),
            "waivers": self.waivers_json(),
            "rules": [r.to_json() for r in self.rules],
        }
