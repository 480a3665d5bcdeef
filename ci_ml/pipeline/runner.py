"""The local runner: walks the step graph, consults the cache, writes manifest.json.

``ci-ml run`` and every single-step command (``ci-ml train``, ``ci-ml scan code``...)
go through ``run_pipeline``, so a step computes the same cache key whether it ran
on a laptop or in a CI job, and ``manifest.json`` always tells what ran.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import ci_ml
from ci_ml.config import Config
from ci_ml.console import Reporter
from ci_ml.errors import EXIT_BLOCKED, EXIT_OK, EXIT_TOOL, CiMlError, UsageError
from ci_ml.extras import missing as missing_modules
from ci_ml.extras import require_all
from ci_ml.fsutil import atomic_write_json, hash_json, hash_path, replace_path
from ci_ml.pipeline.cache import StepCache, cache_key_from_env, check_cache_dir
from ci_ml.pipeline.execute import check_limits, execute, note_selection
from ci_ml.pipeline.interface import (
    Step,
    StepContext,
    StepFailed,
    StepInputs,
    StepStatus,
)
from ci_ml.pipeline.registry import STEPS, ordered_steps

MANIFEST = "manifest.json"
# The version a step's inputs record for a tool that is not installed here.
MISSING = "missing"
STAGING_DIR = ".ci-ml-staging"


@dataclass(frozen=True)
class StepRecord:
    name: str
    key: str
    cached: bool
    status: StepStatus
    summary: str
    duration_s: float
    inputs: Mapping[str, Any]
    outputs: Mapping[str, str]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "key": self.key, "cached": self.cached,
            "status": self.status.value, "summary": self.summary,
            "duration_s": round(self.duration_s, 4),
            "inputs": dict(self.inputs), "outputs": dict(self.outputs),
        }


@dataclass(frozen=True)
class RunResult:
    records: tuple[StepRecord, ...]
    out_dir: Path
    manifest: Path
    summary: Mapping[str, Any] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        statuses = {r.status for r in self.records}
        if StepStatus.ERROR in statuses:
            return EXIT_TOOL
        if StepStatus.BLOCKED in statuses:
            return EXIT_BLOCKED
        return EXIT_OK

    def record(self, name: str) -> StepRecord | None:
        return next((r for r in self.records if r.name == name), None)


def cache_root(config: Config) -> Path:
    env = os.environ.get("CI_ML_CACHE")
    if env:
        return Path(env).resolve()
    return config.resolve(str(config.section("cache")["dir"]))


def open_cache(config: Config, reporter: Reporter) -> StepCache:
    """The step cache, checked before anything runs (a file where the directory should be
    is bad input), authenticated with the CI secret CI_ML_CACHE_KEY when there is one."""
    enabled = bool(config.section("cache")["enabled"])
    root = cache_root(config)
    if enabled:
        check_cache_dir(root, "CI_ML_CACHE" if os.environ.get("CI_ML_CACHE") else "cache.dir")
    return StepCache(root, enabled=enabled, key=cache_key_from_env(), warn=reporter.warn)


def check_out_dir(out_dir: Path) -> None:
    """Fail before anything runs if ``--out`` cannot be written."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out {out_dir}: exists and is not a directory")
    probe = out_dir
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise UsageError(f"--out {out_dir}: not writable ({probe} is a file, not a directory)")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UsageError(f"--out {out_dir}: not writable (no write permission on {probe})")


def select_steps(config: Config, only: Sequence[str] | None) -> list[type[Step]]:
    """The steps to consider: all of them, or those named plus what they need."""
    if not only:
        return ordered_steps()
    for name in only:
        if name not in STEPS:
            raise UsageError(f"unknown step {name!r} (steps: {', '.join(STEPS)})")
    wanted: set[str] = set()
    pending = list(only)
    while pending:
        name = pending.pop()
        if name in wanted:
            continue
        wanted.add(name)
        pending.extend(STEPS[name].after)
    return [s for s in ordered_steps() if s.name in wanted]


def _relative_inputs(config: Config, inputs: StepInputs) -> dict[str, str]:
    hashes: dict[str, str] = {}
    for path in inputs.files:
        try:
            label = path.resolve().relative_to(config.root).as_posix()
        except ValueError:
            label = path.resolve().as_posix()
        hashes[label] = hash_path(path)
    return hashes


def _load_manifest(path: Path) -> dict[str, Any]:
    import json

    try:
        data = json.loads(path.read_text("utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def run_pipeline(
    config: Config,
    out_dir: Path,
    *,
    stage: str = "staging",
    only: Sequence[str] | None = None,
    force: bool = False,
    reporter: Reporter | None = None,
) -> RunResult:
    reporter = reporter or Reporter()
    steps = select_steps(config, only)
    check_out_dir(out_dir)
    cache = open_cache(config, reporter)
    staging_root = out_dir / STAGING_DIR
    plan = plan_steps(steps, config, out_dir, staging_root, stage, force, cache, reporter)
    check_limits(config, sorted(plan.will_run))
    note_selection(only)
    # Every step that will really run validates its inputs before any of them runs or
    # writes; a step the cache will answer costs nothing (not even importing torch).
    needs = [(s.extra_for(config), f"step {s.name}") for s in steps if s.name in plan.will_run]
    require_all([(extra, what) for extra, what in needs if extra is not None])
    for step_cls in steps:
        if step_cls.name in plan.will_run:
            preflight = getattr(step_cls(), "preflight", None)
            if callable(preflight):
                preflight(config)

    out_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = out_dir / MANIFEST
    previous = _load_manifest(manifest_path)
    prev_steps = {s["name"]: s for s in previous.get("steps", []) if isinstance(s, dict)}
    records: list[StepRecord] = []
    output_hashes: dict[str, dict[str, str]] = {
        name: dict(s.get("outputs", {})) for name, s in prev_steps.items()
    }
    total = len(steps)
    try:
        for index, step_cls in enumerate(steps, start=1):
            step = step_cls()
            record = _run_one(step, index, total, config, out_dir, staging_root, stage, force,
                              cache, output_hashes, reporter, plan.inputs.get(step.name),
                              planned_to_run=step.name in plan.will_run)
            records.append(record)
            output_hashes[step.name] = dict(record.outputs)
    finally:
        shutil.rmtree(staging_root, ignore_errors=True)
        try:
            _write_manifest(manifest_path, config, stage, records, prev_steps)
        except OSError as exc:
            # A full disk must not hide the error that stopped the run; the atomic write
            # left the old manifest (or none) in place.
            reporter.warn(f"{manifest_path}: not updated ({exc.strerror})")
    return RunResult(tuple(records), out_dir, manifest_path)


def _run_one(
    step: Step, index: int, total: int, config: Config, out_dir: Path, staging_root: Path,
    stage: str, force: bool, cache: StepCache, output_hashes: Mapping[str, Mapping[str, str]],
    reporter: Reporter, planned_inputs: StepInputs | None = None, planned_to_run: bool = True,
) -> StepRecord:
    ctx = _context(step, config, out_dir, staging_root, stage, force, reporter)
    if not step.enabled(config):
        reporter.step_end(index, total, step.name, "skipped", 0.0, "disabled in config")
        return StepRecord(step.name, "", False, StepStatus.SKIPPED, "disabled in config", 0.0,
                          {}, {})
    started = time.perf_counter()
    ctx.reset_staging()
    declared = planned_inputs if planned_inputs is not None else step.inputs(ctx)
    key_material = _key_material(step, config, declared, output_hashes, stage)
    key = _cache_key(step, config, key_material, cache, force)
    outputs = step.outputs(config)
    outcome = None if (force or not step.cacheable) else cache.lookup(step.name, key)
    if outcome is not None and not cache.restore(step.name, key, outputs, ctx.staging):
        outcome = None      # the entry failed its check (logged): run the step instead
    cached = outcome is not None
    if outcome is not None:
        reporter.step_end(index, total, step.name, "cached", time.perf_counter() - started,
                          outcome.summary)
    else:
        preflight = getattr(step, "preflight", None)
        if not planned_to_run and callable(preflight):
            preflight(config)   # planned as cached, so its inputs were not checked yet
        reporter.step_start(index, total, step.name, step.title)
        try:
            outcome = execute(step, ctx, declared, key)
        except CiMlError as exc:
            reporter.step_end(index, total, step.name, "failed", time.perf_counter() - started)
            raise StepFailed(step.name, exc) from exc
    for rel in outputs:
        if (ctx.staging / rel).exists():
            replace_path(ctx.staging / rel, out_dir / rel)
    if not cached:
        if step.cacheable and outcome.status in (StepStatus.PASSED, StepStatus.BLOCKED):
            cache.store(step.name, key, outcome, outputs, out_dir, tools=key_material["tools"])
        reporter.step_end(index, total, step.name, outcome.status.value,
                          time.perf_counter() - started, outcome.summary)
    produced = {rel: hash_path(out_dir / rel) for rel in outputs if (out_dir / rel).exists()}
    inputs_record = {
        "files": key_material["files"],
        "config": hash_json(declared.config),
        "tools": key_material["tools"],
        "after": sorted(step.after),
    }
    return StepRecord(step.name, key, cached, outcome.status, outcome.summary,
                      time.perf_counter() - started, inputs_record, produced)


def _context(step: Step, config: Config, out_dir: Path, staging_root: Path, stage: str,
             force: bool, reporter: Reporter) -> StepContext:
    return StepContext(config=config, out_dir=out_dir, staging=staging_root / step.name,
                       stage=stage, reporter=reporter, force=force)


def _cache_key(step: Step, config: Config, material: dict[str, Any], cache: StepCache,
               force: bool) -> str:
    """The step's cache key; where its tools are not installed, the key of the entry made
    with the tool versions the job that ran it had.

    A lean job (the gate's core install, no torch) cannot run train or prune, nor compute
    their keys: torch's version is part of them. Nor can a job without the step's extra
    know the environment a train.command ran in (the digest of the packages installed
    where it ran). Any entry whose key is what every other input gives with the entry's
    own recorded tool versions is that step's result.
    """
    key = hash_json(material)
    tools = material["tools"]
    extra = step.extra_for(config)
    runs_here = extra is None or not missing_modules(extra)
    if force or not step.cacheable or (runs_here and MISSING not in tools.values()):
        return key
    for entry_key, recorded in cache.recorded_tools(step.name):
        if set(recorded) == set(tools) and MISSING not in recorded.values():
            if hash_json({**material, "tools": recorded}) == entry_key:
                return entry_key
    return key


def _key_material(step: Step, config: Config, declared: StepInputs,
                  output_hashes: Mapping[str, Mapping[str, str]], stage: str) -> dict[str, Any]:
    """Everything a step's cache key covers; only project-relative paths, so keys travel."""
    return {
        "step": step.name,
        "step_version": step.version,
        "ci_ml": ci_ml.__version__,
        "files": _relative_inputs(config, declared),
        "config": declared.config,
        "tools": dict(declared.tools),
        "extra": dict(declared.extra),
        "after": {name: dict(output_hashes.get(name, {})) for name in step.after},
        "stage": stage if getattr(step, "stage_dependent", False) else None,
    }


@dataclass(frozen=True)
class Plan:
    will_run: frozenset[str]
    inputs: Mapping[str, StepInputs]


def plan_steps(steps: Sequence[type[Step]], config: Config, out_dir: Path, staging_root: Path,
               stage: str, force: bool, cache: StepCache, reporter: Reporter) -> Plan:
    """Predict which steps the cache will answer, walking the graph in order: a step is a
    hit if its key (computed from its inputs and the cached outputs of the steps before it)
    names a complete cache entry. Anything downstream of a miss is assumed to run."""
    will_run: set[str] = set()
    declared: dict[str, StepInputs] = {}
    predicted: dict[str, dict[str, str]] = {}
    # Declaring inputs must not write into --out (a preflight may still refuse the run).
    with tempfile.TemporaryDirectory(prefix="ci-ml-plan-") as scratch:
        _plan_into(steps, config, out_dir, Path(scratch), stage, force, cache, reporter,
                   will_run, declared, predicted)
    return Plan(frozenset(will_run), declared)


def _plan_into(steps: Sequence[type[Step]], config: Config, out_dir: Path, staging_root: Path,
               stage: str, force: bool, cache: StepCache, reporter: Reporter,
               will_run: set[str], declared: dict[str, StepInputs],
               predicted: dict[str, dict[str, str]]) -> None:
    for step_cls in steps:
        step = step_cls()
        if not step.enabled(config):
            predicted[step.name] = {}
            continue
        if force or not step.cacheable or any(dep in will_run for dep in step.after):
            will_run.add(step.name)
            continue
        ctx = _context(step, config, out_dir, staging_root, stage, force, reporter)
        declared[step.name] = step.inputs(ctx)
        key = _cache_key(step, config,
                         _key_material(step, config, declared[step.name], predicted, stage),
                         cache, force)
        hashes = cache.output_hashes(step.name, key, step.outputs(config))
        if hashes is None:
            will_run.add(step.name)
        else:
            predicted[step.name] = hashes


def _write_manifest(path: Path, config: Config, stage: str, records: Sequence[StepRecord],
                    previous: Mapping[str, Mapping[str, Any]]) -> None:
    if not records:
        return
    merged = dict(previous)
    for r in records:
        merged[r.name] = r.to_json()
    order = {name: i for i, name in enumerate(STEPS)}
    atomic_write_json(path, {
        "ci_ml_version": ci_ml.__version__,
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": {"path": config.path.name, "sha256": config.digest()},
        "stage": stage,
        "steps": sorted(merged.values(), key=lambda s: order.get(str(s["name"]), 99)),
    })
