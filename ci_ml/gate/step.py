"""The gate step: gather evidence from the out dir, evaluate, write the reports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ci_ml.config import Config
from ci_ml.fsutil import atomic_write_json, atomic_write_text
from ci_ml.gate.evaluate import evaluate
from ci_ml.gate.interface import Decision, Evidence, StagePolicy
from ci_ml.pipeline.interface import Step, StepContext, StepInputs, StepOutcome, StepStatus
from ci_ml.report.findings import findings_document
from ci_ml.report.junit import render_junit
from ci_ml.report.markdown import render_summary
from ci_ml.scan.registry import SCANNERS
from ci_ml.scan.step import load_scan_results

GATE_OUTPUTS = ("findings.json", "decision.json", "summary.md", "junit.xml")
SCAN_STEPS = tuple(f"scan-{name}" for name in SCANNERS)


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text("utf-8")) if path.is_file() else None


def gather_evidence(out_dir: Path) -> Evidence:
    return Evidence(
        metrics=_read_json(out_dir / "metrics.json") or {},
        data_report=_read_json(out_dir / "data-report.json"),
        scans=load_scan_results(out_dir, list(SCANNERS)),
    )


def decide(config: Config, out_dir: Path, stage: str) -> Decision:
    policy = StagePolicy.from_config(stage, config.section("policy")[stage])
    return evaluate(gather_evidence(out_dir), policy)


class GateStep(Step):
    name = "gate"
    title = "one decision from metrics, data checks and findings"
    after = ("data-check", "train", "prune", *SCAN_STEPS)
    stage_dependent = True

    def inputs(self, ctx: StepContext) -> StepInputs:
        return StepInputs(config={"policy": dict(ctx.config.section("policy"))})

    def outputs(self, config: Config) -> tuple[str, ...]:
        return GATE_OUTPUTS

    def run(self, ctx: StepContext) -> StepOutcome:
        evidence = gather_evidence(ctx.out_dir)
        policy = StagePolicy.from_config(ctx.stage, ctx.config.section("policy")[ctx.stage])
        decision = evaluate(evidence, policy)
        atomic_write_json(ctx.output("findings.json"), findings_document(evidence.scans))
        atomic_write_json(ctx.output("decision.json"), decision.to_json())
        atomic_write_text(ctx.output("summary.md"),
                          render_summary(decision, evidence.metrics, evidence.scans))
        atomic_write_text(ctx.output("junit.xml"), render_junit(decision))
        status = StepStatus.PASSED if decision.passed else StepStatus.BLOCKED
        verdict = "PASS" if decision.passed else "BLOCK"
        blocking = "; ".join(r.message for r in decision.blocking[:3])
        return StepOutcome(status, f"{verdict} for {ctx.stage}" + (f": {blocking}" if blocking else ""),
                           decision.to_json())
