"""The generated GitHub workflow, run for real in act on the example project.

act runs the jobs on this host (self-hosted platform). Remote actions (setup-python,
cache, artifacts, SARIF upload) are skipped there by ``!env.ACT``; the jobs hand
their results on through the step cache (CI_ML_CACHE) and the out dir (CI_ML_OUT),
both host directories, as jobs on one self-hosted runner would.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from ci_ml.ci.reports import SARIF
from tests.ci.clients import (
    ActRun,
    Source,
    ci_project,
    enabled_steps,
    fresh_counts,
    generate,
    installs,
    manifest_steps,
    run_act,
    same_torch_as_the_jobs,
    signing_key,
    steps_counts,
    warm_counts,
)
from tests.conftest import run_cli
from tests.registry.servers import Distribution

# One act run serves several tests: keep them on one xdist worker
# (--dist loadscope: a module at a time; the group mark is for --dist loadgroup).
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("act")]

EVIDENCE_JOBS = {"data-check", "train", "prune", "scan-code", "scan-deps", "scan-model",
                 "scan-dast"}
BRANCH_JOBS = EVIDENCE_JOBS | {"gate-staging", "promote-staging"}
TAG_JOBS = EVIDENCE_JOBS | {"gate-production", "promote-production"}
STEP_JOBS = EVIDENCE_JOBS | {"gate-staging", "gate-production"}
JOB_STEP = {"data-check": "data-check", "train": "train", "prune": "prune",
            "scan-code": "scan-code", "scan-deps": "scan-deps", "scan-model": "scan-model",
            "scan-dast": "scan-dast", "gate-staging": "gate", "gate-production": "gate"}


@dataclass(frozen=True)
class Setup:
    repo: Path
    work: Path
    source: Source
    cache: Path
    registry: str       # the OCI repository the pipeline promotes to (the distribution server)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, source: Source,
          distribution: Distribution) -> Setup:
    work = tmp_path_factory.mktemp("act")
    repo = ci_project(work, source)
    generate(repo, "github")
    return Setup(repo, work, source, work / "step-cache",
                 f"oci://{distribution.host}/act/{uuid.uuid4().hex[:12]}")


def secrets(setup: Setup) -> dict[str, str]:
    return {"CI_ML_SIGNING_KEY": signing_key(setup.work).read_text()}


@pytest.fixture(scope="module")
def branch_run(setup: Setup) -> ActRun:
    """A push to main with an empty step cache: every step really runs once."""
    return run_act(setup.repo, setup.work, setup.source, cache=setup.cache,
                   out=setup.work / "out-main", secrets=secrets(setup), registry=setup.registry)


def test_every_job_of_a_push_to_main_passes(branch_run: ActRun) -> None:
    assert branch_run.returncode == 0, branch_run.raw[-4000:]
    assert branch_run.results == {job: "success" for job in BRANCH_JOBS}


def test_jobs_run_the_ci_ml_commands_in_order_and_reuse_earlier_steps(
        setup: Setup, branch_run: ActRun) -> None:
    # Each job computes its own step and restores the ones before it from the cache.
    for job in BRANCH_JOBS & STEP_JOBS:
        assert steps_counts(branch_run.logs[job]) == fresh_counts(setup.repo, JOB_STEP[job]), job
    assert any("ci-ml gate: pass" in line for line in branch_run.logs["gate-staging"])


def test_remote_actions_are_skipped_under_act(branch_run: ActRun) -> None:
    assert "placeholder for a remote action ran" not in branch_run.raw


def test_each_job_installs_ci_ml_from_the_pinned_commit_with_only_its_extra(
        setup: Setup, branch_run: ActRun) -> None:
    """Nothing is preinstalled: the generated setup step installs every job's ci-ml."""
    source = setup.source
    for job, extras in (("data-check", "[data]"), ("train", "[train]"), ("prune", "[train]"),
                        ("scan-code", "[scan]"), ("scan-dast", "[scan,serve]"),
                        ("gate-staging", "[oci,serve]"), ("promote-staging", "[oci]")):
        assert installs(branch_run.logs[job]) == [source.requirement(extras)], job


def test_artifacts_and_reports_exist(setup: Setup, branch_run: ActRun) -> None:
    out = setup.work / "out-main"
    for name in ("data-report.json", "metrics.json", "prune-report.json", "scans/code.json",
                 "scans/deps.json", "scans/model.json", "scans/dast.json", "findings.json",
                 "decision.json", "junit.xml", "summary.md", "manifest.json", SARIF,
                 "gl-sast-report.json", "gl-dependency-scanning-report.json",
                 "gl-dast-report.json"):
        assert (out / name).is_file(), name
    runs = json.loads((out / SARIF).read_text())["runs"]
    assert {r["automationDetails"]["id"] for r in runs} == {
        "ci-ml/code/", "ci-ml/deps/", "ci-ml/model/", "ci-ml/dast/"}
    assert (out / "model").is_dir() and (out / "candidate").is_dir()
    decision = json.loads((out / "decision.json").read_text())
    assert decision["stage"] == "staging" and decision["decision"] == "pass"
    manifest = json.loads((out / "manifest.json").read_text())
    assert [s["name"] for s in manifest["steps"]] == manifest_steps(setup.repo)


def test_a_push_to_main_promotes_to_staging_with_a_signed_attestation(
        setup: Setup, branch_run: ActRun) -> None:
    promotion = json.loads((setup.work / "out-main" / "promotion.json").read_text())
    assert promotion["stage"] == "staging" and promotion["version"] == 1
    assert promotion["attestation"]["signed"] is True
    assert promotion["registry"] == setup.registry
    # The key reached ci-ml as a file that is gone after the step; never in the log.
    assert "PRIVATE KEY" not in branch_run.raw
    assert not list((setup.work).glob("act-cache/**/signing.pem"))


def test_the_gate_summary_is_the_job_summary(setup: Setup, branch_run: ActRun) -> None:
    summary = (setup.work / "out-main" / "summary.md").read_text()
    assert summary.startswith("## ci-ml gate:") and "PASS for staging" in summary.splitlines()[0]
    assert summary.strip() in "\n".join(branch_run.summaries["gate-staging"])
    for job in BRANCH_JOBS - {"gate-staging"}:
        assert "(exit code 0)" in "\n".join(branch_run.summaries[job]), job


@pytest.fixture(scope="module")
def tag_run(setup: Setup, branch_run: ActRun) -> ActRun:
    """Then a release tag of the same commit: same step cache, same registry."""
    assert branch_run.returncode == 0, branch_run.raw[-4000:]
    return run_act(setup.repo, setup.work, setup.source, cache=setup.cache,
                   out=setup.work / "out-tag", tag="v1.0.0", secrets=secrets(setup),
                   registry=setup.registry)


def test_a_release_tag_gates_and_promotes_to_production(setup: Setup, tag_run: ActRun) -> None:
    assert tag_run.returncode == 0, tag_run.raw[-4000:]
    assert tag_run.results == {job: "success" for job in TAG_JOBS}
    # Nothing is recomputed but the production gate: the registry changed since the
    # branch run (the model is now in staging), and the gate's key includes its state.
    for job in EVIDENCE_JOBS:
        assert steps_counts(tag_run.logs[job]) == warm_counts(setup.repo, JOB_STEP[job]), job
    assert steps_counts(tag_run.logs["gate-production"]) == fresh_counts(setup.repo, "gate")
    out = setup.work / "out-tag"
    decision = json.loads((out / "decision.json").read_text())
    assert decision["stage"] == "production" and decision["decision"] == "pass"
    # act has no environment approvals: the production promotion runs straight away.
    promotion = json.loads((out / "promotion.json").read_text())
    assert promotion["stage"] == "production" and promotion["version"] == 1
    assert promotion["attestation"]["signed"] is True
    # The production gate read the staging promotion back from the OCI registry, and
    # the whole history there verifies with the committed public key.
    assert "stage.staging" not in decision["blocking"]
    verified = run_cli("verify", "--config", setup.repo / "ci-ml.yaml", "--head",
                       promotion["head"], env={"CI_ML_REGISTRY": setup.registry})
    assert verified.code == 0, verified.output
    assert "2 event(s)" in verified.stdout


def test_steps_run_locally_are_cached_in_the_ci_run(tmp_path: Path, source: Source) -> None:
    """`ci-ml run` on a laptop and the CI jobs compute the same step-cache keys."""
    same_torch_as_the_jobs()
    repo = ci_project(tmp_path, source)
    generate(repo, "github")
    cache = tmp_path / "shared-cache"
    local = run_cli("run", "--config", repo / "ci-ml.yaml", "--out", tmp_path / "local-out",
                    env={"CI_ML_CACHE": str(cache)})
    assert local.code == 0, local.output
    assert f"steps: {len(enabled_steps(repo))} ran, 0 from cache" in local.stdout

    run = run_act(repo, tmp_path, source, cache=cache, out=tmp_path / "ci-out",
                  secrets={"CI_ML_SIGNING_KEY": signing_key(tmp_path).read_text()})
    assert run.returncode == 0, run.raw[-4000:]
    assert run.results == {job: "success" for job in BRANCH_JOBS}
    for job in BRANCH_JOBS & STEP_JOBS:
        assert steps_counts(run.logs[job]) == warm_counts(repo, JOB_STEP[job]), job
    manifest = json.loads((tmp_path / "ci-out" / "manifest.json").read_text())
    local_manifest = json.loads((tmp_path / "local-out" / "manifest.json").read_text())
    assert all(step["cached"] for step in manifest["steps"]
               if step["status"] != "skipped" and step["name"] != "scan-dast")
    # The never-cached DAST scan ran again in the gate job, whose lean install has no ZAP
    # client: its recorded tool versions, not a cache key anyone looks up, differ.
    assert ({s["name"]: s["key"] for s in manifest["steps"] if s["name"] != "scan-dast"}
            == {s["name"]: s["key"] for s in local_manifest["steps"] if s["name"] != "scan-dast"})
