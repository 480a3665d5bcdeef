"""The gate step: gather evidence (out dir, registry, waivers, clock), evaluate, write reports.

All I/O happens here; ``evaluate`` stays pure. The step's cache key includes
today's date and the registry's state, because an expiring waiver or a new model
in the stage changes the decision although no file in the out dir changed.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ci_ml.config import Config
from ci_ml.errors import InputError
from ci_ml.fsutil import atomic_write_json, atomic_write_text, sha256_file
from ci_ml.gate.evaluate import evaluate
from ci_ml.gate.interface import Decision, Evidence, StageModel, StagePolicy
from ci_ml.model.steps import served_metrics_path
from ci_ml.monitor.interface import REPORT_NAME as MONITOR_REPORT
from ci_ml.pipeline.interface import Step, StepContext, StepInputs, StepOutcome, StepStatus
from ci_ml.registry.backends import open_registry
from ci_ml.registry.interface import (
    EMPTY_STATE,
    STAGES,
    ModelIdentity,
    RegistryState,
    RegistryTampered,
)
from ci_ml.report.findings import findings_document
from ci_ml.report.gitlab import FILE_NAMES as GITLAB_FILE_NAMES
from ci_ml.report.html import MetricPoint, render_html
from ci_ml.report.junit import render_junit
from ci_ml.report.markdown import render_summary
from ci_ml.report.security import SARIF_NAME, write_security_reports
from ci_ml.scan.registry import SCANNERS
from ci_ml.scan.step import load_scan_results
from ci_ml.scan.waivers import Waiver
from ci_ml.scan.waivers import configured_waivers as scan_waivers

GATE_OUTPUTS = ("findings.json", "decision.json", "summary.md", "junit.xml", "report.html",
                SARIF_NAME, *GITLAB_FILE_NAMES.values())
SCAN_STEPS = tuple(f"scan-{name}" for name in SCANNERS)


def _read_json(path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from exc


def waivers_path(config: Config) -> Path | None:
    rel = config.section("scan")["waivers"]
    return config.resolve(str(rel)) if rel else None


def configured_waivers(config: Config) -> tuple[Waiver, ...]:
    return scan_waivers(config) or ()


def stage_models(state: RegistryState) -> dict[str, StageModel]:
    out = {}
    for stage in STAGES:
        record = state.current(stage)
        if record is not None:
            out[stage] = StageModel(stage, record.version, record.digest, dict(record.metrics))
    return out


def registry_state(config: Config) -> tuple[RegistryState, str | None]:
    """The registry's verified state, or (empty, why) when its history fails verification."""
    try:
        return open_registry(config).state(), None
    except RegistryTampered as exc:
        return EMPTY_STATE, exc.message


def gather_evidence(config: Config, out_dir: Path, today: datetime.date | None = None,
                    state: RegistryState | None = None,
                    registry_problem: str | None = None) -> Evidence:
    if state is None:
        state, registry_problem = registry_state(config)
    identity = ModelIdentity.try_from_out_dir(out_dir)
    return Evidence(
        metrics=_read_json(served_metrics_path(out_dir)) or {},
        data_report=_read_json(out_dir / "data-report.json"),
        scans=load_scan_results(out_dir, list(SCANNERS)),
        waivers=configured_waivers(config),
        today=today or datetime.date.today(),
        model_digest=identity.digest if identity else None,
        stage_models=stage_models(state),
        passed={stage: state.passed(stage) for stage in STAGES},
        prune_report=_read_json(out_dir / "prune-report.json"),
        registry_problem=registry_problem,
        registry_signing=state.signing if registry_problem is None else "required",
        registry_unsigned=state.unsigned,
    )


def stage_policy(config: Config, stage: str) -> StagePolicy:
    return StagePolicy.from_config(stage, config.section("policy")[stage])


def decide(config: Config, out_dir: Path, stage: str) -> Decision:
    return evaluate(gather_evidence(config, out_dir), stage_policy(config, stage))


def metric_history(state: RegistryState, evidence: Evidence) -> list[MetricPoint]:
    """Every registry version's metrics, then the candidate's: the HTML report's history plot."""
    points = [MetricPoint(f"v{n}", dict(state.versions[n].metrics),
                          (*state.stages_of(n), *(("candidate",) if state.versions[n].digest
                                                  == evidence.model_digest else ())))
              for n in sorted(state.versions)]
    known = {state.versions[n].digest for n in state.versions}
    if evidence.model_digest not in known:
        points.append(MetricPoint("candidate", dict(evidence.metrics), ()))
    return points


def write_reports(ctx: StepContext, decision: Decision, evidence: Evidence, policy: StagePolicy,
                  state: RegistryState) -> None:
    atomic_write_json(ctx.output("findings.json"),
                      findings_document(evidence.scans, decision.waivers))
    atomic_write_json(ctx.output("decision.json"), decision.to_json())
    atomic_write_text(ctx.output("summary.md"), render_summary(decision, evidence, policy))
    atomic_write_text(ctx.output("junit.xml"), render_junit(decision))
    atomic_write_text(ctx.output("report.html"),
                      render_html(decision, evidence, policy, metric_history(state, evidence),
                                  ctx.out_dir))
    # SARIF for GitHub code scanning and the GitLab security reports, waivers applied.
    write_security_reports(ctx.staging, evidence.scans, decision.waivers)


class GateStep(Step):
    name = "gate"
    title = "one decision from metrics, data checks, findings and the registry"
    after = ("data-check", "train", "prune", *SCAN_STEPS)
    stage_dependent = True
    version = "2"

    def preflight(self, config: Config) -> None:
        # A broken waivers file, registry config or key is bad input: say so before anything
        # runs. A registry whose history fails verification is not: the gate blocks on it.
        configured_waivers(config)
        registry_state(config)

    def inputs(self, ctx: StepContext) -> StepInputs:
        c = ctx.config
        path = waivers_path(c)
        return StepInputs(
            files=(path,) if path else (),
            config={"policy": dict(c.section("policy")), "waivers": c.section("scan")["waivers"],
                    "registry": dict(c.section("registry"))},
            extra={"today": datetime.date.today().isoformat(),
                   "registry": open_registry(c).state_digest(),
                   # report.html shows the latest monitoring section when there is one.
                   "monitor": _file_digest(ctx.artifact(MONITOR_REPORT)) or ""},
        )

    def outputs(self, config: Config) -> tuple[str, ...]:
        return GATE_OUTPUTS

    def run(self, ctx: StepContext) -> StepOutcome:
        state, problem = registry_state(ctx.config)
        evidence = gather_evidence(ctx.config, ctx.out_dir, state=state, registry_problem=problem)
        policy = stage_policy(ctx.config, ctx.stage)
        decision = evaluate(evidence, policy)
        write_reports(ctx, decision, evidence, policy, state)
        status = StepStatus.PASSED if decision.passed else StepStatus.BLOCKED
        verdict = "PASS" if decision.passed else "BLOCK"
        blocking = "; ".join(r.message for r in decision.blocking[:3])
        more = len(decision.blocking) - 3
        tail = f" (+{more} more)" if more > 0 else ""
        return StepOutcome(status, f"{verdict} for {ctx.stage}" +
                           (f": {blocking}{tail}" if blocking else ""), _details(decision))


def _file_digest(path: Path) -> str | None:
    return sha256_file(path) if path.is_file() else None


def _details(decision: Decision) -> Mapping[str, Any]:
    return {"stage": decision.stage, "decision": decision.outcome.value,
            "blocking": [r.rule for r in decision.blocking], "model": decision.model_digest}
