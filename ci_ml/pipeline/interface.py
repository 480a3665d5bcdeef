"""What a pipeline step is: declared inputs, declared outputs, and a run.

A step's cache key is the hash of everything it declares as input: the files
it reads, its config sections, the versions of the tools it calls, and the
output hashes of the steps it runs after. If the key is unchanged the step's
outputs are restored from the cache instead of recomputed.
"""

from __future__ import annotations

import enum
import shutil
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ci_ml.config import Config
from ci_ml.console import Reporter
from ci_ml.errors import CiMlError


class StepStatus(enum.Enum):
    PASSED = "passed"      # did its work; any findings are for the gate to weigh
    BLOCKED = "blocked"    # a gate or a budget said no
    ERROR = "error"        # a tool failed: the run fails closed
    SKIPPED = "skipped"    # disabled in the config


@dataclass(frozen=True)
class StepInputs:
    files: tuple[Path, ...] = ()
    config: Mapping[str, Any] = field(default_factory=dict)
    tools: Mapping[str, str] = field(default_factory=dict)
    extra: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class StepOutcome:
    status: StepStatus
    summary: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status.value, "summary": self.summary, "details": dict(self.details)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StepOutcome:
        return cls(StepStatus(data["status"]), str(data.get("summary", "")),
                   dict(data.get("details", {})))


@dataclass
class StepContext:
    """What a running step sees. It reads artifacts from ``out_dir`` and writes
    its own outputs under ``staging``; the runner publishes them only if the
    step succeeds, so a failing step leaves nothing half-written."""

    config: Config
    out_dir: Path
    staging: Path
    stage: str
    reporter: Reporter
    force: bool = False

    def artifact(self, rel: str) -> Path:
        """An existing artifact of an earlier step (read side)."""
        return self.out_dir / rel

    def output(self, rel: str) -> Path:
        """Where this step writes one of its declared outputs (write side)."""
        path = self.staging / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def reset_staging(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)
        self.staging.mkdir(parents=True)


class Step(ABC):
    name: ClassVar[str]
    title: ClassVar[str]
    after: ClassVar[tuple[str, ...]] = ()
    # Bump when the step's own logic changes what it writes: old cache entries stop matching.
    version: ClassVar[str] = "1"
    cacheable: ClassVar[bool] = True
    # The optional part of ci-ml (``ci_ml.extras``) the step needs to run; the core install
    # can still take its result from the step cache.
    extra: ClassVar[str | None] = None

    @classmethod
    def extra_for(cls, config: Config) -> str | None:
        """The extra the step needs to run with ``config``: ``extra`` unless the config
        changes what the step runs (a train.command project trains without torch). The
        runner checks it before running the step; the CI generator installs it in the
        step's job."""
        return cls.extra

    def enabled(self, config: Config) -> bool:
        return True

    @abstractmethod
    def inputs(self, ctx: StepContext) -> StepInputs: ...

    @abstractmethod
    def outputs(self, config: Config) -> tuple[str, ...]:
        """Artifact paths relative to the out dir (files or directories)."""

    @abstractmethod
    def run(self, ctx: StepContext) -> StepOutcome: ...


class StepFailed(CiMlError):
    """A step raised: carries the step's name so the runner can say where."""

    def __init__(self, step: str, cause: CiMlError) -> None:
        super().__init__(f"{step}: {cause.message}", hint=cause.hint)
        self.exit_code = cause.exit_code
        self.cause = cause
