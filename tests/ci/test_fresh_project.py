"""A project other than the example, from `ci-ml init` to its first push to main, in both
clients: every job of the generated pipeline installs ci-ml from the pinned commit and
passes, the model is promoted to staging and deployed (no canary: nothing is in
production yet), with manifests naming the image the deploy job just built."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from ci_ml.scaffold import SIGNING_KEY
from tests.ci.clients import (
    Source,
    git,
    installs,
    job_env,
    run_act,
    run_gitlab_ci_local,
)
from tests.conftest import REPO

pytestmark = [pytest.mark.slow, pytest.mark.docker, pytest.mark.xdist_group("fresh-project")]


@dataclass(frozen=True)
class Fresh:
    root: Path
    source: Source
    ci_ml: Path          # ci-ml as a user has it: installed from the git commit


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory, source: Source) -> Fresh:
    """sklearn's breast-cancer data as a new project: `ci-ml init` and nothing else.

    ci-ml itself is installed the way a team installs it, from the repository at a commit
    (with the [data] extra `ci-ml init` reads the data with): `ci-ml generate` then pins
    that very commit, unasked.
    """
    work = tmp_path_factory.mktemp("fresh")
    venv = work / "user-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    env = job_env(source)
    proc = subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet",
                           source.requirement("[data]")], env=env, capture_output=True, text=True,
                          timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    root = work / "cancer"
    (root / "data").mkdir(parents=True)
    subprocess.run([sys.executable, str(REPO / "scripts" / "export_sklearn_dataset.py"),
                    "breast_cancer", str(root / "data")], check=True, capture_output=True)
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=root, check=True)
    return Fresh(root, source, venv / "bin" / "ci-ml")


def initialise(fresh: Fresh, target: str, dest: Path) -> Path:
    repo = dest / "repo"
    subprocess.run(["cp", "-a", str(fresh.root), str(repo)], check=True)
    for args in (["init", str(repo)], ["generate", target, "--config", str(repo / "ci-ml.yaml")]):
        proc = subprocess.run([str(fresh.ci_ml), *args], capture_output=True, text=True,
                              cwd=repo, timeout=300, check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "ci-ml init; ci-ml generate")
    return repo


def private_key(repo: Path) -> Path:
    """The key `ci-ml init` made: git-ignored, so no job's checkout has it."""
    key = repo / SIGNING_KEY
    tracked = subprocess.run(["git", "ls-files"], cwd=repo, capture_output=True, text=True,
                             check=True).stdout.split()
    assert key.is_file() and SIGNING_KEY not in tracked
    return key


def check_deployment(out: Path) -> None:
    """The deploy job rendered the manifests for the image it just built."""
    record = json.loads((out / "image.json").read_text())
    (deployment,) = [d for d in yaml.safe_load_all((out / "k8s" / "deployment.yaml").read_text())
                     if d]
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == record["reference"]
    assert record["reference"] == f"{record['name']}:{record['tag']}"
    promotion = json.loads((out / "promotion.json").read_text())
    assert record["model_digest"] == promotion["digest"]
    assert record["tag"] == promotion["digest"].removeprefix("sha256:")[:12]
    assert not (out / "k8s" / "deployment-canary.yaml").exists()   # first deployment


def test_first_push_to_main_passes_in_act(fresh: Fresh, tmp_path: Path) -> None:
    repo = initialise(fresh, "github", tmp_path)
    out = tmp_path / "out"
    # As `ci-ml init` says: the git-ignored private key is stored as the CI secret.
    run = run_act(repo, tmp_path, fresh.source, cache=tmp_path / "step-cache", out=out,
                  secrets={"CI_ML_SIGNING_KEY": private_key(repo).read_text()})
    assert run.returncode == 0, run.raw[-5000:]
    jobs = yaml.safe_load((repo / ".github/workflows/ci-ml.yml").read_text())["jobs"]
    expected = {j for j in jobs if "production" not in j}
    assert run.results == {job: "success" for job in expected}
    assert installs(run.logs["gate-staging"]) == [fresh.source.requirement("[oci]")]
    assert installs(run.logs["promote-staging"]) == [fresh.source.requirement("[deploy,oci]")]
    assert json.loads((out / "decision.json").read_text())["decision"] == "pass"
    check_deployment(out)


def test_first_push_to_main_passes_in_gitlab_ci_local(fresh: Fresh, tmp_path: Path) -> None:
    repo = initialise(fresh, "gitlab", tmp_path)
    # A File variable in GitLab: the job gets the path of a copy of the secret.
    run = run_gitlab_ci_local(repo, fresh.source,
                              variables={"CI_ML_SIGNING_KEY": str(private_key(repo))})
    assert run.returncode == 0, run.raw[-5000:]
    assert run.results and set(run.results.values()) == {"PASS"}, run.results
    assert {"ci-ml-gate-staging", "ci-ml-promote-staging"} <= set(run.results)
    assert installs(run.logs["ci-ml-gate-staging"]) == [fresh.source.requirement("[oci]")]
    check_deployment(run.artifacts(repo, "ci-ml-promote-staging") / "ci-ml-out")
