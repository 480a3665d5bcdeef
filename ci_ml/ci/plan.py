"""From a config to a target-neutral pipeline plan: which jobs, in which order, when.

The jobs mirror ``ci-ml run``: data check, train, prune, one job per enabled
scanner, then the gate. Promotion follows the gate: staging on pushes to the
default branch, production on release tags (behind an approval). A scanner
switched off in the config has no job, so the pipeline never runs a step the
local run would skip; prune always has one, as it always runs locally: with
pruning off it still exports the candidate.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

import ci_ml
from ci_ml.ci.install import install_source
from ci_ml.ci.interface import (
    SCANNER_ORDER,
    GenerateError,
    Job,
    PipelinePlan,
    ProjectPaths,
    Trigger,
)
from ci_ml.config import Config
from ci_ml.model.layout import training_requirements, uses_command
from ci_ml.pipeline.registry import STEPS

# What each scanner's job installs: the image scan builds the image, DAST serves the model,
# the IaC scan runs trivy (which [deploy] brings).
SCAN_EXTRAS: dict[str, tuple[str, ...]] = {"image": ("scan", "deploy"), "iac": ("scan", "deploy"),
                                           "dast": ("scan", "serve")}

# What may go into a generated file from the config: no `$` (GitHub's ${{ }} and
# GitLab's $[[ ]] and $VAR would expand it), no quotes, backslashes or newlines.
_SAFE_PATH = re.compile(r"^[A-Za-z0-9._/+@*, -]+$")
# Requirement files become words of the setup step's pip command: no spaces, commas or
# wildcards either, and no leading '-' (pip would read an option).
_SAFE_REQUIREMENT = re.compile(r"^[A-Za-z0-9._/+@][A-Za-z0-9._/+@-]*$")


def safe_value(value: str, what: str) -> str:
    if not _SAFE_PATH.match(value):
        raise GenerateError(
            f"{what}: {value!r} cannot be written into a CI pipeline safely "
            "(allowed: letters, digits and . _ / + @ * , - and spaces)")
    return value


def _relative(path: Path, repo: Path, what: str) -> str | None:
    """``path`` relative to the repository root, or None when it lies outside it."""
    try:
        rel = path.resolve().relative_to(repo)
    except ValueError:
        return None
    return safe_value(rel.as_posix() or ".", what)


def _glob_for(path: Path, rel: str) -> str:
    return f"{rel}/**" if path.is_dir() else rel


def project_paths(config: Config, repo: Path, out: Path) -> ProjectPaths:
    repo = repo.resolve()
    config_rel = _relative(config.path, repo, "--config")
    if config_rel is None:
        raise GenerateError(
            f"--config {config.path} is outside --output {repo}: the pipeline runs in the "
            "repository, so the config must be inside it")
    if out.is_absolute() or ".." in out.parts:
        raise GenerateError(f"--out {out}: must be a relative path inside the repository")
    out_rel = safe_value(PurePosixPath(out.as_posix()).as_posix(), "--out")
    root_rel = _relative(config.root, repo, "project directory") or "."

    cache_dir = _relative(config.resolve(str(config.section("cache")["dir"])), repo, "cache.dir")
    if cache_dir is None or cache_dir == ".":
        cache_dir = ".ci-ml-cache"

    data = config.section("data")
    scan = config.section("scan")
    inputs: list[str] = [config_rel]
    candidates: list[tuple[str, str]] = [(str(data["train"]), "data.train"),
                                         (str(data["test"]), "data.test")]
    if scan["code"]["enabled"]:
        candidates += [(str(p), "scan.code.paths") for p in scan["code"]["paths"]]
    if scan["deps"]["enabled"]:
        candidates += [(str(p), "scan.deps.requirements") for p in scan["deps"]["requirements"]]
    for raw, what in candidates:
        path = config.resolve(raw)
        rel = _relative(path, repo, what)
        if rel is not None and _glob_for(path, rel) not in inputs:
            inputs.append(_glob_for(path, rel))
    train_rel = _relative(config.resolve(str(data["train"])), repo, "data.train")
    key_files = (config_rel,) + ((train_rel,) if train_rel else ())
    return ProjectPaths(config=config_rel, root=root_rel, out=out_rel, cache_dir=cache_dir,
                        cache_inputs=tuple(inputs), cache_key_files=key_files)


def requirement_paths(config: Config, repo: Path) -> tuple[str, ...]:
    """The project's requirement files the train job installs, relative to the repository
    (``train.requirements``, or its default: see ``training_requirements``)."""
    repo = repo.resolve()
    found: list[str] = []
    for raw, key in training_requirements(config):
        path = config.resolve(raw)
        rel = _relative(path, repo, key)
        if rel is None:
            raise GenerateError(f"{key}: {raw} is outside the repository ({repo}): the train "
                                "job installs it from its checkout")
        if not _SAFE_REQUIREMENT.match(rel):
            raise GenerateError(f"{key}: {raw!r} cannot be passed to pip in a CI pipeline "
                                "safely (allowed: letters, digits and . _ / + @ -, not first -)")
        if not path.is_file():
            raise GenerateError(f"{key}: {raw} is not a file ({path})")
        if rel not in found:
            found.append(rel)
    return tuple(found)


def step_extras(step: str, config: Config) -> tuple[str, ...]:
    """What a step's job installs beside ci-ml's core: the extra the step needs to run."""
    extra = STEPS[step].extra_for(config)
    return (extra,) if extra else ()


def plan_jobs(config: Config, requirements: tuple[str, ...] = ()) -> tuple[Job, ...]:
    """The jobs; ``requirements``: the project's requirement files (repository-relative)
    that the jobs running its code install (train, and prune for a model factory)."""
    ci = config.section("ci")
    jobs: list[Job] = [
        Job("data-check", "data-check", "data check", extras=step_extras("data-check", config)),
        Job("train", "train", "train", needs=("data-check",),
            extras=step_extras("train", config), requirements=requirements),
    ]
    # The prune step always runs, pruning or not: it exports the candidate the scans, the
    # gate and promotion take. Without its job, the first of them would have to run it
    # (with [train], which their installs lack). A train.command model is shipped as
    # trained: no project code runs in prune then.
    jobs.append(Job("prune", "prune", "prune" if config.section("prune")["enabled"] else
                    "export the candidate", needs=("train",),
                    extras=step_extras("prune", config),
                    requirements=() if uses_command(config) else requirements))
    model_job = "prune"
    scan = config.section("scan")
    for scanner in SCANNER_ORDER:
        # A scanner the config schema does not know (yet) has no job.
        if not scan.get(scanner, {}).get("enabled", False):
            continue
        # Code, dependency and IaC scans read only the repository; the others need the model.
        needs = () if scanner in ("code", "deps", "iac") else (model_job,)
        dast = scanner == "dast"
        jobs.append(Job(f"scan-{scanner}", "scan", f"scan {scanner}", needs=needs,
                        scanner=scanner, build_image=scanner == "image", dast=dast,
                        zap=dast and bool(ci["zap"]), extras=SCAN_EXTRAS.get(scanner, ("scan",))))
    evidence = tuple(j.id for j in jobs)
    registry = registry_extras(config)
    # The gate takes every step from the cache, except the DAST scan of a live endpoint,
    # which is never cached and so runs again there: it serves the model.
    gate_extras = (("serve",) if any(j.dast for j in jobs) else ()) + registry
    for stage, gate_trigger, promote_trigger in (
        ("staging", Trigger.NOT_RELEASE, Trigger.DEFAULT_BRANCH),
        ("production", Trigger.RELEASE, Trigger.RELEASE),
    ):
        jobs.append(Job(f"gate-{stage}", "gate", f"gate ({stage})", needs=evidence,
                        trigger=gate_trigger, stage=stage, extras=gate_extras))
        if ci["promote"]:
            jobs.append(Job(f"promote-{stage}", "promote", f"promote ({stage})",
                            needs=(f"gate-{stage}",), trigger=promote_trigger, stage=stage,
                            deploy=bool(ci["deploy"]),
                            extras=(("deploy",) if ci["deploy"] else ()) + registry))
    # The scheduled monitor job (ci-ml monitor --trigger): it alone runs on the schedule.
    if config.section("monitor")["schedule"]:
        jobs.append(Job("monitor", "monitor", "monitor", trigger=Trigger.SCHEDULE,
                        extras=("monitor", *registry)))
    return tuple(jobs)


def registry_extras(config: Config) -> tuple[str, ...]:
    """What the jobs that read or write the model registry (gate, promote, monitor) install
    for it: the pipelines' registry is an OCI repository unless the CI variable
    CI_ML_REGISTRY says otherwise (GHCR, GitLab's registry), and MLflow's client when the
    config's backend is MLflow (the variable then names its tracking server)."""
    backend = str(config.section("registry")["backend"])
    return ("oci", "mlflow") if backend == "mlflow" else ("oci",)


def build_plan(config: Config, repo: Path, out: Path) -> PipelinePlan:
    ci = config.section("ci")
    # Port 0 (any free port) cannot be handed to ZAP: the DAST job serves on a fixed one.
    port = int(config.section("serve")["port"]) or 8080
    return PipelinePlan(
        version=ci_ml.__version__,
        install=install_source(config),
        paths=project_paths(config, repo, out),
        jobs=plan_jobs(config, requirement_paths(config, repo)),
        settings=ci,
        serve_port=port,
        schedule=_schedule(config),
        trigger_kind=str(config.section("monitor")["trigger"]["kind"]),
    )


def _schedule(config: Config) -> str | None:
    cron = config.section("monitor")["schedule"]
    return safe_value(str(cron), "monitor.schedule") if cron else None

