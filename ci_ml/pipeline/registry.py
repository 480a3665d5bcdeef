"""The pipeline's steps in run order: data check -> train -> prune -> scans -> gate."""

from __future__ import annotations

from ci_ml.pipeline.interface import Step


def _build() -> dict[str, type[Step]]:
    # Imported here, not at module level: step modules import the pipeline interface.
    from ci_ml.data.step import DataCheckStep
    from ci_ml.gate.step import GateStep
    from ci_ml.model.steps import PruneStep, TrainStep
    from ci_ml.scan.step import scan_steps

    steps: list[type[Step]] = [
        DataCheckStep,
        TrainStep,
        PruneStep,
        *scan_steps(),
        GateStep,
    ]
    return {s.name: s for s in steps}


STEPS: dict[str, type[Step]] = _build()


def ordered_steps() -> list[type[Step]]:
    return list(STEPS.values())
