"""The pipeline plan: which jobs exist, what they need and when they run, from the config."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ci_ml.ci.gitlab import release_regex
from ci_ml.ci.interface import GenerateError, PipelinePlan, Trigger
from ci_ml.ci.plan import build_plan
from ci_ml.config import Config, load_config
from tests.conftest import EXAMPLE


def plan_for(tmp_path: Path, **changes: object) -> PipelinePlan:
    cfg = yaml.safe_load((EXAMPLE / "ci-ml.yaml").read_text())
    for dotted, value in changes.items():
        node = cfg
        *parents, leaf = dotted.split("__")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    path = tmp_path / "ci-ml.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return build_plan(load_config(path), tmp_path, Path("ci-ml-out"))


def test_example_jobs_follow_the_local_run(tmp_path: Path) -> None:
    plan = plan_for(tmp_path, scan__dast={"enabled": True})
    assert plan.job_ids == ("data-check", "train", "prune", "scan-code", "scan-deps",
                            "scan-model", "scan-dast", "gate-staging", "promote-staging",
                            "gate-production", "promote-production")
    assert plan.job("train").needs == ("data-check",)
    assert plan.job("scan-code").needs == ()
    assert plan.job("scan-model").needs == ("prune",)
    assert plan.job("scan-dast").needs == ("prune",) and plan.job("scan-dast").zap
    evidence = ("data-check", "train", "prune", "scan-code", "scan-deps", "scan-model",
                "scan-dast")
    assert plan.job("gate-staging").needs == evidence
    assert plan.job("gate-production").needs == evidence
    assert plan.job("gate-staging").trigger is Trigger.NOT_RELEASE
    assert plan.job("promote-staging").trigger is Trigger.DEFAULT_BRANCH
    assert plan.job("promote-production").trigger is Trigger.RELEASE
    source = yaml.safe_load((EXAMPLE / "ci-ml.yaml").read_text())["ci"]["source"]
    assert plan.package == f"ci-ml @ git+{source['url']}@{source['ref']}"
    assert plan.job("train").extras == ("train",) and plan.job("scan-code").extras == ("scan",)
    assert plan.job("data-check").extras == ("data",)
    # The gate takes every step from the cache but the live DAST scan, which serves the model;
    # it reads the registry (the regression baseline), an OCI repository in the pipelines.
    assert plan.job("gate-staging").extras == ("serve", "oci")
    assert plan.job("scan-dast").extras == ("scan", "serve")
    assert set(plan.job("promote-staging").extras) >= {"oci"}


def test_jobs_that_use_the_registry_install_its_client(tmp_path: Path) -> None:
    plan = plan_for(tmp_path, registry={"backend": "mlflow"}, scan__dast={"enabled": False})
    for job in ("gate-staging", "gate-production", "promote-staging", "promote-production"):
        assert {"oci", "mlflow"} <= set(plan.job(job).extras), job
    assert "oci" not in plan.job("train").extras and "oci" not in plan.job("scan-code").extras


def test_disabled_scanners_have_no_job_and_prune_always_has_one(tmp_path: Path) -> None:
    plan = plan_for(tmp_path, scan__deps={"enabled": False}, scan__model={"enabled": False},
                    scan__dast={"enabled": False}, prune={"enabled": False},
                    ci__promote=False)
    assert plan.job_ids == ("data-check", "train", "prune", "scan-code", "gate-staging",
                            "gate-production")
    # Pruning off, the prune step still exports the candidate: its job installs [train],
    # so the scans and the gate (without torch) take the candidate from its artifacts.
    assert plan.job("prune").extras == ("train",) and plan.job("prune").title != "prune"


def test_image_and_dast_scans_need_the_model(tmp_path: Path) -> None:
    plan = plan_for(tmp_path, scan__image={"enabled": True}, scan__dast={"enabled": True},
                    prune={"enabled": False}, serve={"port": 9000})
    assert plan.job("scan-image").needs == ("prune",) and plan.job("scan-image").build_image
    assert plan.job("scan-dast").dast and plan.job("scan-dast").zap
    assert plan.serve_port == 9000


def test_dast_without_zap_uses_the_built_in_engine(tmp_path: Path) -> None:
    plan = plan_for(tmp_path, ci__zap=False, serve={"port": 0},
                    scan__dast={"enabled": True})
    assert plan.job("scan-dast").dast and not plan.job("scan-dast").zap
    assert plan.serve_port == 8080


def test_a_scanner_unknown_to_the_config_schema_has_no_job_until_enabled(tmp_path: Path
                                                                        ) -> None:
    (tmp_path / "ci-ml.yaml").write_text((EXAMPLE / "ci-ml.yaml").read_text())
    config = load_config(tmp_path / "ci-ml.yaml")
    assert "scan-iac" not in build_plan(config, tmp_path, Path("out")).job_ids
    data = {**config.data, "scan": {**config.section("scan"), "iac": {"enabled": True}}}
    plan = build_plan(Config(config.path, data), tmp_path, Path("out"))
    assert plan.job("scan-iac").needs == () and plan.job("scan-iac").scanner == "iac"


def test_cache_inputs_are_repository_relative_globs(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    plan = plan_for(tmp_path)
    assert plan.paths.cache_inputs == ("ci-ml.yaml", "data/train.csv", "data/test.csv",
                                       "src/**", "requirements.txt")
    assert plan.paths.cache_key_files == ("ci-ml.yaml", "data/train.csv")
    assert plan.paths.cache_dir == ".ci-ml-cache"


def test_a_config_in_a_subdirectory_keeps_paths_relative_to_the_repository(tmp_path: Path
                                                                           ) -> None:
    project = tmp_path / "ml"
    project.mkdir()
    cfg = yaml.safe_load((EXAMPLE / "ci-ml.yaml").read_text())
    (project / "ci-ml.yaml").write_text(yaml.safe_dump(cfg))
    plan = build_plan(load_config(project / "ci-ml.yaml"), tmp_path, Path("build/ci"))
    assert plan.paths.config == "ml/ci-ml.yaml"
    assert plan.paths.cache_inputs[:2] == ("ml/ci-ml.yaml", "ml/data/train.csv")
    assert plan.paths.cache_dir == "ml/.ci-ml-cache"
    assert plan.paths.out == "build/ci"


def test_values_that_a_ci_system_would_expand_are_refused(tmp_path: Path) -> None:
    with pytest.raises(GenerateError, match=r"data\.train.*cannot be written"):
        plan_for(tmp_path, data__train="data/${{ github.token }}.csv")


def test_release_tag_globs_become_gitlab_regexes() -> None:
    assert release_regex("v*") == "/^v.*$/"
    assert release_regex("release/1.*") == r"/^release\/1\..*$/"
