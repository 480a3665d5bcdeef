"""A project that trains with its own script, through its generated GitLab pipeline, for real.

The bundled sklearn example (train.py: scikit-learn + skl2onnx) in gitlab-ci-local:
the train job installs ci-ml's torch-free [evaluate] extra and the project's
requirements.txt through the generated setup step, runs train.command, and ci-ml
measures the ONNX model it leaves; the later jobs (core, [scan], ...) take that
result from the artifacts and the gate decides on it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.ci.clients import (
    GitLabRun,
    Source,
    generate,
    installs,
    run_gitlab_ci_local,
    steps_counts,
)
from tests.conftest import FIXTURES

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("gitlab-ci-local")]

JOBS = {"ci-ml-data-check", "ci-ml-train", "ci-ml-prune", "ci-ml-scan-code",
        "ci-ml-scan-deps", "ci-ml-scan-model", "ci-ml-gate-staging"}


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory, source: Source) -> tuple[Path, GitLabRun]:
    repo = tmp_path_factory.mktemp("byo") / "repo"
    shutil.copytree(FIXTURES / "sklearn-example", repo,
                    ignore=shutil.ignore_patterns("__pycache__", ".ci-ml-cache"))
    cfg_path = repo / "ci-ml.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    # The offline advisory mirror is a host directory, as on a self-hosted runner.
    cfg["scan"]["deps"]["advisories"] = str(FIXTURES / "advisories" / "pypa-vulns")
    cfg["ci"] = {"promote": False, "zap": False,
                 "source": {"url": source.url, "ref": source.ref}}
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=repo, check=True)
    generate(repo, "gitlab")
    return repo, run_gitlab_ci_local(repo, source)


def test_every_job_passes(pipeline: tuple[Path, GitLabRun]) -> None:
    _, run = pipeline
    assert run.returncode == 0, run.raw[-4000:]
    assert run.results == {job: "PASS" for job in JOBS}


def test_the_train_job_installs_the_projects_requirements_and_no_torch(
        pipeline: tuple[Path, GitLabRun], source: Source) -> None:
    repo, run = pipeline
    assert installs(run.logs["ci-ml-train"]) == [
        f"{source.requirement('[evaluate]')} -r requirements.txt"]
    # Prune ships the ONNX model as trained: the core install, no project packages.
    assert installs(run.logs["ci-ml-prune"]) == [source.requirement()]
    out = run.artifacts(repo, "ci-ml-train") / "ci-ml-out"
    packages = json.loads((out / "train-run.json").read_text())["environment"]["packages"]
    pins = dict(line.split("==") for line in (repo / "requirements.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    for name, version in pins.items():
        assert packages[name.lower()] == version, name
    assert "torch" not in packages and packages["onnxruntime"]


def test_train_command_made_the_model_and_ci_ml_measured_it(
        pipeline: tuple[Path, GitLabRun]) -> None:
    repo, run = pipeline
    log = "\n".join(run.logs["ci-ml-train"])
    assert "train.command: " in log and "measured by ci-ml from the ONNX model" in log
    out = run.artifacts(repo, "ci-ml-train") / "ci-ml-out"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["measured_by"] == "ci-ml" and metrics["accuracy"] >= 0.9
    manifest = json.loads((out / "train-run.json").read_text())
    assert manifest["trainer"] == "command" and manifest["returncode"] == 0
    assert (out / "model" / "model.onnx").is_file()


def test_later_jobs_take_the_trained_model_from_the_artifacts(
        pipeline: tuple[Path, GitLabRun]) -> None:
    """No job after train can compute train's key (the packages it ran with are not
    installed there): each takes the entry made by the train job and never re-runs it."""
    repo, run = pipeline
    assert steps_counts(run.logs["ci-ml-prune"]) == (1, 2)        # prune ran; data-check, train
    for job in ("ci-ml-scan-model", "ci-ml-gate-staging"):
        assert "train.command: " not in "\n".join(run.logs[job]), job
    gate = run.artifacts(repo, "ci-ml-gate-staging") / "ci-ml-out"
    decision = json.loads((gate / "decision.json").read_text())
    assert decision["decision"] == "pass", decision
    candidate = json.loads((gate / "candidate" / "metrics.json").read_text())
    assert candidate["candidate"] == "trained" and candidate["measured_by"] == "ci-ml"
