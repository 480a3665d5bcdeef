"""The generated GitLab pipeline, run for real in gitlab-ci-local on the example project.

gitlab-ci-local runs every job with the shell executor in its own copy of the
repository (--shell-isolation) and hands artifacts from job to job through
``needs:``, as GitLab does: the out dir and the step cache travel that way.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from ci_ml.ci.reports import GATE_DOTENV, SARIF
from tests.ci.clients import (
    GitLabRun,
    Source,
    ci_project,
    fresh_counts,
    generate,
    installs,
    run_gitlab_ci_local,
    same_torch_as_the_jobs,
    signing_key,
    steps_counts,
    warm_counts,
)
from tests.conftest import run_cli
from tests.registry.servers import Distribution

# One pipeline run serves several tests: keep them on one xdist worker
# (--dist loadscope: a module at a time; the group mark is for --dist loadgroup).
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("gitlab-ci-local")]

STEP_JOBS = {"ci-ml-data-check", "ci-ml-train", "ci-ml-prune", "ci-ml-scan-code",
             "ci-ml-scan-deps", "ci-ml-scan-model", "ci-ml-scan-dast"}
JOBS = STEP_JOBS | {"ci-ml-gate-staging", "ci-ml-promote-staging"}


def step_of(job: str) -> str:
    """The pipeline step a job's own command runs: ci-ml-scan-code -> scan-code."""
    name = job.removeprefix("ci-ml-")
    return "gate" if name.startswith("gate-") else name


@dataclass(frozen=True)
class Pipeline:
    repo: Path
    source: Source
    run: GitLabRun
    registry: str       # the OCI repository the pipeline promotes to (the distribution server)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory, source: Source,
             distribution: Distribution) -> Pipeline:
    """A push to main, each job in its own build directory, nothing shared but artifacts."""
    work = tmp_path_factory.mktemp("gitlab")
    repo = ci_project(work, source)
    generate(repo, "gitlab")
    key = signing_key(work)  # a File variable in GitLab: the job gets its path
    registry = f"oci://{distribution.host}/gitlab/{uuid.uuid4().hex[:12]}"
    return Pipeline(repo, source, run_gitlab_ci_local(
        repo, source, variables={"CI_ML_SIGNING_KEY": str(key)}, registry=registry), registry)


def test_every_job_passes(pipeline: Pipeline) -> None:
    assert pipeline.run.returncode == 0, pipeline.run.raw[-4000:]
    assert pipeline.run.results == {job: "PASS" for job in JOBS}


def test_each_job_installs_ci_ml_from_the_pinned_commit_with_only_its_extra(
        pipeline: Pipeline) -> None:
    """Nothing is preinstalled: the generated setup installs every job's ci-ml."""
    for job, extras in (("ci-ml-data-check", "[data]"), ("ci-ml-train", "[train]"),
                        ("ci-ml-scan-deps", "[scan]"), ("ci-ml-scan-dast", "[scan,serve]"),
                        ("ci-ml-gate-staging", "[oci,serve]"), ("ci-ml-promote-staging", "[oci]")):
        assert installs(pipeline.run.logs[job]) == [pipeline.source.requirement(extras)], job


def test_artifacts_carry_finished_steps_to_the_jobs_that_need_them(pipeline: Pipeline) -> None:
    # Each job computes its own step and restores the ones before it from its artifacts.
    for job in STEP_JOBS | {"ci-ml-gate-staging"}:
        counts = steps_counts(pipeline.run.logs[job])
        assert counts == fresh_counts(pipeline.repo, step_of(job)), job


def test_artifacts_and_reports_exist(pipeline: Pipeline) -> None:
    gate = pipeline.run.artifacts(pipeline.repo, "ci-ml-gate-staging") / "ci-ml-out"
    for name in ("data-report.json", "metrics.json", "prune-report.json", "scans/code.json",
                 "findings.json", "decision.json", "junit.xml", "summary.md", "manifest.json",
                 GATE_DOTENV):
        assert (gate / name).is_file(), name
    # The junit and dotenv reports the gate job declares.
    assert "<testsuite" in (gate / "junit.xml").read_text()
    dotenv = dict(line.split("=", 1) for line in (gate / GATE_DOTENV).read_text().splitlines())
    assert dotenv == {"CI_ML_DECISION": "pass", "CI_ML_STAGE": "staging",
                      "CI_ML_GATE_EXIT_CODE": "0"}
    # Each scan job's own security reports, the ones its component declares.
    for scanner, report in (("code", "gl-sast-report.json"), ("model", "gl-sast-report.json"),
                            ("deps", "gl-dependency-scanning-report.json"),
                            ("dast", "gl-dast-report.json")):
        scan = pipeline.run.artifacts(pipeline.repo, f"ci-ml-scan-{scanner}") / "ci-ml-out"
        assert json.loads((scan / f"scans/{scanner}.json").read_text())["status"] == "ok"
        assert json.loads((scan / report).read_text())["scan"]["status"] == "success", scanner
        assert (scan / SARIF).is_file()
    # Each job's artifact also holds the step cache the next jobs restore from.
    assert any((pipeline.run.artifacts(pipeline.repo, "ci-ml-train") / ".ci-ml-cache" / "train")
               .iterdir())


def test_a_push_to_main_promotes_the_gated_model_to_staging(pipeline: Pipeline) -> None:
    out = pipeline.run.artifacts(pipeline.repo, "ci-ml-promote-staging") / "ci-ml-out"
    promotion = json.loads((out / "promotion.json").read_text())
    assert promotion["stage"] == "staging" and promotion["version"] == 1
    assert promotion["attestation"]["signed"] is True
    assert promotion["registry"] == pipeline.registry


def test_a_release_tag_gates_production_from_the_pipeline_cache(pipeline: Pipeline) -> None:
    """A tag pipeline after the push to main: GitLab's `cache:` (keyed by files) brings
    the step cache over, so only the production gate is computed; the production
    promotion is a manual job and waits for a person."""
    assert pipeline.run.returncode == 0, pipeline.run.raw[-4000:]
    run = run_gitlab_ci_local(pipeline.repo, pipeline.source,
                              variables={"CI_COMMIT_TAG": "v1.0.0", "CI_COMMIT_BRANCH": ""},
                              registry=pipeline.registry)
    assert run.returncode == 0, run.raw[-4000:]
    assert run.results == {job: "PASS" for job in STEP_JOBS | {"ci-ml-gate-production"}}
    assert "ci-ml-promote-production" not in run.logs
    for job in STEP_JOBS:
        assert steps_counts(run.logs[job]) == warm_counts(pipeline.repo, step_of(job)), job
    assert (steps_counts(run.logs["ci-ml-gate-production"])
            == fresh_counts(pipeline.repo, "gate"))
    dotenv = run.artifacts(pipeline.repo, "ci-ml-gate-production") / "ci-ml-out" / GATE_DOTENV
    assert dotenv.read_text().splitlines() == [
        "CI_ML_DECISION=pass", "CI_ML_STAGE=production", "CI_ML_GATE_EXIT_CODE=0"]
    # The production gate read the staging promotion back from the OCI registry.
    decision = json.loads((dotenv.parent / "decision.json").read_text())
    assert {r["rule"]: r["outcome"] for r in decision["rules"]}["stage.staging"] == "pass"


def test_steps_run_locally_are_cached_in_the_ci_run(tmp_path: Path, source: Source) -> None:
    same_torch_as_the_jobs()
    repo = ci_project(tmp_path, source)
    generate(repo, "gitlab")
    cache = tmp_path / "shared-cache"
    local = run_cli("run", "--config", repo / "ci-ml.yaml", "--out", tmp_path / "local-out",
                    env={"CI_ML_CACHE": str(cache)})
    assert local.code == 0, local.output
    run = run_gitlab_ci_local(repo, source,
                              variables={"CI_ML_CACHE": str(cache),
                                         "CI_ML_SIGNING_KEY": str(signing_key(tmp_path))})
    assert run.returncode == 0, run.raw[-4000:]
    assert run.results == {job: "PASS" for job in JOBS}
    for job in JOBS - {"ci-ml-promote-staging"}:
        assert steps_counts(run.logs[job]) == warm_counts(repo, step_of(job)), job
