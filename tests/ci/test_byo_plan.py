"""A project that trains with its own train.command, in the generated pipelines: which
extra and which of the project's requirement files each job installs; bad paths."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from ci_ml.ci.interface import GenerateError, PipelinePlan
from ci_ml.ci.plan import build_plan
from ci_ml.config import load_config
from ci_ml.pipeline.registry import STEPS
from tests.conftest import EXAMPLE, FIXTURES, run_cli

SKLEARN = FIXTURES / "sklearn-example"
SOURCE = yaml.safe_load((EXAMPLE / "ci-ml.yaml").read_text())["ci"]["source"]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """The sklearn example as a repository of its own, pinned to a ci-ml commit."""
    dest = tmp_path / "repo"
    shutil.copytree(SKLEARN, dest, ignore=shutil.ignore_patterns("__pycache__", ".ci-ml-cache"))
    configure(dest, ci={"source": SOURCE})
    return dest


def configure(project: Path, **sections: Any) -> Path:
    path = project / "ci-ml.yaml"
    cfg = yaml.safe_load(path.read_text())
    for name, value in sections.items():
        section, _, key = name.partition("__")
        if key:
            cfg.setdefault(section, {})[key] = value
        else:
            cfg[section] = value
    path.write_text(yaml.safe_dump(cfg))
    return path


def plan(project: Path, repo: Path | None = None) -> PipelinePlan:
    return build_plan(load_config(project / "ci-ml.yaml"), repo or project, Path("ci-ml-out"))


def test_train_command_jobs_install_the_evaluate_extra_and_the_audited_requirements(
        project: Path) -> None:
    p = plan(project)
    train, prune = p.job("train"), p.job("prune")
    assert train.extras == ("evaluate",)
    # Unset train.requirements: what the dependency scan audits is what the job installs.
    assert train.requirements == ("requirements.txt",)
    assert p.requirement(train).startswith("ci-ml[evaluate] @ git+")
    # Prune ships the ONNX model as trained: the core install copies it, no project code.
    assert prune.extras == () and prune.requirements == ()
    assert all(not j.requirements for j in p.jobs if j.id != "train")
    assert p.job("data-check").extras == ("data",)


def test_requirements_follow_train_requirements_when_set(project: Path) -> None:
    (project / "ci").mkdir()
    (project / "ci" / "train.txt").write_text("scikit-learn==1.9.1\n")
    configure(project, train__requirements=["ci/train.txt", "requirements.txt", "ci/train.txt"])
    assert plan(project).job("train").requirements == ("ci/train.txt", "requirements.txt")
    configure(project, train__requirements=[])
    assert plan(project).job("train").requirements == ()


def test_without_a_dependency_scan_the_default_installs_nothing(project: Path) -> None:
    configure(project, scan__deps={"enabled": False})
    assert plan(project).job("train").requirements == ()


def test_paths_are_made_relative_to_the_repository(project: Path, tmp_path: Path) -> None:
    """A project in a subdirectory: the jobs run at the repository root."""
    repo = tmp_path / "mono"
    shutil.move(project, repo / "ml" / "penguins")
    p = plan(repo / "ml" / "penguins", repo)
    assert p.job("train").requirements == ("ml/penguins/requirements.txt",)


def test_ci_ml_own_training_keeps_the_train_extra_and_installs_no_project_files() -> None:
    config = load_config(EXAMPLE / "ci-ml.yaml")
    p = build_plan(config, EXAMPLE, Path("ci-ml-out"))
    assert p.job("train").extras == ("train",) and p.job("train").requirements == ()
    assert p.job("prune").extras == ("train",)
    assert STEPS["train"].extra_for(config) == "train"


def test_a_model_factory_gets_its_requirements_in_train_and_prune(tmp_path: Path) -> None:
    """ci-ml's loop on a package.module:factory model imports the project's code in both."""
    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLE, repo, ignore=shutil.ignore_patterns(
        ".github", ".gitlab", ".gitlab-ci.yml", ".ci-ml-cache", "__pycache__"))
    configure(repo, train__requirements=["requirements.txt"])
    p = plan(repo)
    assert p.job("train").requirements == ("requirements.txt",)
    assert p.job("prune").requirements == ("requirements.txt",)
    assert p.job("train").extras == ("train",)


@pytest.mark.parametrize(("paths", "message"), [
    (["../outside.txt"], r"train\.requirements: \.\./outside\.txt is outside the repository"),
    (["missing.txt"], r"train\.requirements: missing\.txt is not a file"),
    (["data"], r"train\.requirements: data is not a file"),
    (["req$(id).txt"], r"train\.requirements: 'req\$\(id\)\.txt' cannot be written"),
    (["has space.txt"], r"train\.requirements: 'has space\.txt' cannot be passed to pip"),
    (["-e.txt"], r"train\.requirements: '-e\.txt' cannot be passed to pip"),
    (["*.txt"], r"train\.requirements: '\*\.txt' cannot be passed to pip"),
])
def test_bad_requirement_paths_are_refused(project: Path, tmp_path: Path, paths: list[str],
                                           message: str) -> None:
    (tmp_path / "outside.txt").write_text("numpy\n")
    for name in ("has space.txt", "-e.txt"):
        (project / name).write_text("numpy\n")
    configure(project, train__requirements=paths)
    with pytest.raises(GenerateError, match=message):
        plan(project)


def test_a_symlink_out_of_the_repository_is_refused(project: Path, tmp_path: Path) -> None:
    (tmp_path / "elsewhere.txt").write_text("numpy\n")
    (project / "linked.txt").symlink_to(tmp_path / "elsewhere.txt")
    configure(project, train__requirements=["linked.txt"])
    with pytest.raises(GenerateError, match="outside the repository"):
        plan(project)


def test_the_default_names_the_scan_key_when_its_file_is_missing(project: Path) -> None:
    (project / "requirements.txt").unlink()
    with pytest.raises(GenerateError, match=r"^scan\.deps\.requirements: requirements\.txt is "
                       "not a file"):
        plan(project)


@pytest.mark.parametrize("target", ["github", "gitlab"])
def test_generate_exits_2_naming_the_key_and_writes_nothing(project: Path, target: str) -> None:
    configure(project, train__requirements=["../../etc/passwd"])
    result = run_cli("generate", target, "--config", project / "ci-ml.yaml")
    assert result.code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: train.requirements: "), result.stderr
    assert not (project / ".github").exists() and not (project / ".gitlab-ci.yml").exists()


def test_the_schema_refuses_a_string_where_a_list_is_expected(project: Path) -> None:
    configure(project, train__requirements="requirements.txt")
    result = run_cli("generate", "github", "--config", project / "ci-ml.yaml")
    assert result.code == 2 and "train.requirements" in result.stderr, result.stderr


def test_generated_files_install_the_requirements_in_the_train_job_only(project: Path) -> None:
    assert run_cli("generate", "github", "--config", project / "ci-ml.yaml").code == 0
    workflow = yaml.safe_load((project / ".github/workflows/ci-ml.yml").read_text())
    setups = {job: next(s["with"] for s in spec["steps"] if s.get("name") == "Set up ci-ml")
              for job, spec in workflow["jobs"].items()}
    assert setups["train"]["requirements"] == "requirements.txt"
    assert "[evaluate]" in setups["train"]["package"]
    assert [job for job, w in setups.items() if "requirements" in w] == ["train"]
    assert "[" not in setups["prune"]["package"]      # the core install

    assert run_cli("generate", "gitlab", "--config", project / "ci-ml.yaml").code == 0
    pipeline = yaml.safe_load((project / ".gitlab-ci.yml").read_text())
    by_file = [entry for entry in pipeline["include"]
               if entry["local"].endswith(("/train.yml", "/prune.yml"))]
    train, prune = by_file
    assert train["inputs"]["requirements"] == "requirements.txt"
    assert "requirements" not in prune["inputs"]
    component = yaml.safe_load_all((project / ".gitlab/ci-ml/train.yml").read_text())
    spec, jobs = list(component)
    assert jobs["ci-ml-train"]["variables"]["CI_ML_JOB_REQUIREMENTS"] == \
        "$[[ inputs.requirements ]]"


def test_train_refuses_a_named_requirements_file_that_is_missing(project: Path) -> None:
    configure(project, train__requirements=["requirements.txt", "ci/missing.txt"])
    result = run_cli("train", "--config", project / "ci-ml.yaml", "--out", project / "out")
    assert result.code == 2
    assert result.stderr.startswith("error: train.requirements: ci/missing.txt is not a file "
                                    "in the project"), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (project / "out").exists() and "train.command" not in result.output
