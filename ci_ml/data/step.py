"""The data-check step: load both splits, run the checks, write data-report.json."""

from __future__ import annotations

from ci_ml.config import Config
from ci_ml.data.checks import run_checks
from ci_ml.data.loader import load_data
from ci_ml.fsutil import atomic_write_json
from ci_ml.pipeline.interface import Step, StepContext, StepInputs, StepOutcome, StepStatus

DATA_REPORT = "data-report.json"


class DataCheckStep(Step):
    name = "data-check"
    title = "schema, quality, leakage and drift checks"

    def preflight(self, config: Config) -> None:
        load_data(config)

    def inputs(self, ctx: StepContext) -> StepInputs:
        data = ctx.config.section("data")
        return StepInputs(
            files=(ctx.config.resolve(data["train"]), ctx.config.resolve(data["test"])),
            config={"data": dict(data), "input_shape": ctx.config.section("model")["input_shape"]},
        )

    def outputs(self, config: Config) -> tuple[str, ...]:
        return (DATA_REPORT,)

    def run(self, ctx: StepContext) -> StepOutcome:
        bundle = load_data(ctx.config)
        report = run_checks(bundle, ctx.config.section("data")["checks"])
        atomic_write_json(ctx.output(DATA_REPORT), report.to_json())
        failed = [c.name for c in report.checks if not c.passed]
        summary = (f"{len(report.checks)} checks passed" if not failed
                   else f"{len(failed)} of {len(report.checks)} checks failed: {', '.join(failed)}")
        # A failed data check is evidence for the gate, which decides whether it blocks.
        return StepOutcome(StepStatus.PASSED, summary, {"failed": failed})
