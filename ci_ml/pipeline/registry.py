"""The pipeline's steps in run order: data check -> train -> prune -> scans -> gate."""

from __future__ import annotations

from ci_ml.pipeline.interface import Step


def _build() -> dict[str, type[Step]]:
    # Imported here, not at module level: step modules import the pipeline interface.
    from ci_ml.data.step import DataCheckStep
    from ci_ml.gate.step import GateStep
    from ci_ml.model.steps import PruneStep, TrainStep
    from ci_ml.scan.step import make_scan_step

    # DAST scans a live system: its result is never restored from the cache. It declares no
    # `after`, so scanning an external --target does not train a model first; in a full run it
    # comes after prune and, without a target, serves the pruned model for the scan.
    dast = make_scan_step("dast", "DAST of the running model endpoint")
    dast.cacheable = False
    steps: list[type[Step]] = [
        DataCheckStep,
        TrainStep,
        PruneStep,
        make_scan_step("code", "bandit on the project's code"),
        dast,
        GateStep,
    ]
    return {s.name: s for s in steps}


STEPS: dict[str, type[Step]] = _build()


def ordered_steps() -> list[type[Step]]:
    return list(STEPS.values())
