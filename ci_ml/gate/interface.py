"""Value types of the gate: the evidence it weighs, the policy, and the decision."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ci_ml.scan.interface import ScanResult, Severity


class Outcome(enum.Enum):
    PASS = "pass"  # noqa: S105 - an outcome, not a password
    BLOCK = "block"


@dataclass(frozen=True)
class MetricBound:
    metric: str
    min: float | None = None
    max: float | None = None


@dataclass(frozen=True)
class StagePolicy:
    stage: str
    metrics: tuple[MetricBound, ...] = ()
    findings: Mapping[Severity, int] = field(default_factory=dict)
    required_scans: tuple[str, ...] = ()
    data_check_required: bool = True

    @classmethod
    def from_config(cls, stage: str, section: Mapping[str, Any]) -> StagePolicy:
        return cls(
            stage=stage,
            metrics=tuple(MetricBound(name, b.get("min"), b.get("max"))
                          for name, b in sorted(section.get("metrics", {}).items())),
            findings={Severity.parse(k): int(v) for k, v in section.get("findings", {}).items()},
            required_scans=tuple(section.get("required_scans", ())),
            data_check_required=section.get("data_check", "required") == "required",
        )


@dataclass(frozen=True)
class Evidence:
    metrics: Mapping[str, Any]
    data_report: Mapping[str, Any] | None
    scans: Mapping[str, ScanResult]


@dataclass(frozen=True)
class RuleResult:
    rule: str
    category: str          # metric, findings, scan, data
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

    def to_json(self) -> dict[str, Any]:
        return {"stage": self.stage, "decision": self.outcome.value,
                "blocking": [r.rule for r in self.blocking],
                "rules": [r.to_json() for r in self.rules]}
