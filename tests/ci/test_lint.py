"""Generated YAML validates against the vendored schemas and passes zizmor's audits.

check-jsonschema's vendored `github-workflows`, `github-actions` and `gitlab-ci`
schemas (shipped inside the package: they work offline), zizmor --offline, and
gitlab-ci-local's --preview, which resolves the includes and their inputs the way
GitLab does. Covered: the example's golden files, ci-ml's published steps, and a
variant with every optional job (image scan, DAST with ZAP, published actions).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.ci.clients import git, tool
from tests.conftest import EXAMPLE, REPO, run_cli

INPUT = re.compile(r"\$\[\[\s*inputs\.([\w-]+)\s*\]\]")
SHA = "0123456789abcdef0123456789abcdef01234567"


def check_jsonschema(schema: str, files: list[Path]) -> None:
    assert files
    proc = subprocess.run([tool("check-jsonschema"), "--builtin-schema", f"vendor.{schema}",
                           *map(str, files)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def zizmor(*paths: Path) -> None:
    proc = subprocess.run([tool("zizmor"), "--offline", "--no-progress", *map(str, paths)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "No findings to report" in proc.stdout + proc.stderr


def _substitute(node: Any, values: dict[str, Any]) -> Any:
    if isinstance(node, str):
        whole = INPUT.fullmatch(node.strip())
        if whole:
            return values[whole.group(1)]

        def text(match: re.Match[str]) -> str:
            value = values[match.group(1)]
            return str(value).lower() if isinstance(value, bool) else str(value)

        return INPUT.sub(text, node)
    if isinstance(node, dict):
        return {_substitute(k, values): _substitute(v, values) for k, v in node.items()}
    if isinstance(node, list):
        return [_substitute(item, values) for item in node]
    return node


def interpolate(component: Path, given: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A component's header, and its body with `$[[ inputs.x ]]` replaced as GitLab does."""
    header_text, body_text = component.read_text().split("\n---\n", 1)
    header = yaml.safe_load(header_text)
    spec = header["spec"]["inputs"]
    values = {name: s["default"] for name, s in spec.items() if "default" in s} | given
    assert set(values) == set(spec), f"{component}: inputs without a value"
    for name, s in spec.items():
        if "options" in s:
            assert values[name] in s["options"], (component, name)
    return header, _substitute(yaml.safe_load(body_text), values)


def gitlab_components_validate(directory: Path, tmp: Path) -> None:
    required = {"scan": {"scanner": "code"}, "gate": {"target": "staging"},
                "promote": {"target": "production"}, "deploy": {"target": "production"}}
    files = []
    for component in sorted(directory.glob("*.yml")):
        header, body = interpolate(component, required.get(component.stem, {}))
        if component.stem != "setup":
            # A step job extends .ci-ml-setup: validate it with the hidden job it extends.
            _, setup = interpolate(directory / "setup.yml", {})
            body = setup | body
        for part, doc in (("header", header), ("body", body)):
            path = tmp / f"{component.stem}-{part}.yml"
            path.write_text(yaml.safe_dump(doc, sort_keys=False))
            files.append(path)
    check_jsonschema("gitlab-ci", files)


def gitlab_preview_validates(repo: Path, tmp: Path) -> dict[str, Any]:
    """Resolve includes and inputs with gitlab-ci-local, then validate the result."""
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "preview")
    proc = subprocess.run([tool("gitlab-ci-local"), "--preview"], cwd=repo, capture_output=True,
                          text=True, check=False, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    preview = tmp / "preview.yml"
    preview.write_text(proc.stdout)
    check_jsonschema("gitlab-ci", [preview])
    doc: dict[str, Any] = yaml.safe_load(proc.stdout)
    return doc


# ------------------------------------------------------------------ the golden files

def test_example_workflow_and_actions_validate() -> None:
    check_jsonschema("github-workflows", [EXAMPLE / ".github/workflows/ci-ml.yml"])
    check_jsonschema("github-actions",
                     sorted((EXAMPLE / ".github/actions/ci-ml").glob("*/action.yml")))


def test_published_actions_validate() -> None:
    check_jsonschema("github-actions", sorted((REPO / "actions").glob("*/action.yml")))


def test_zizmor_finds_nothing_in_the_example_and_the_published_actions() -> None:
    zizmor(EXAMPLE / ".github", REPO / "actions")


def test_example_gitlab_pipeline_validates(tmp_path: Path) -> None:
    check_jsonschema("gitlab-ci", [EXAMPLE / ".gitlab-ci.yml"])
    gitlab_components_validate(EXAMPLE / ".gitlab/ci-ml", tmp_path)
    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLE, repo, ignore=shutil.ignore_patterns(".ci-ml-cache", "__pycache__"))
    preview = gitlab_preview_validates(repo, tmp_path)
    assert preview["ci-ml-gate-staging"]["artifacts"]["reports"] == {
        "junit": "ci-ml-out/junit.xml", "dotenv": "ci-ml-out/gate.env"}
    for scanner in ("code", "deps", "model"):
        assert preview[f"ci-ml-scan-{scanner}"]["artifacts"]["reports"] == {
            "sast": "ci-ml-out/gl-sast-report.json",
            "dependency_scanning": "ci-ml-out/gl-dependency-scanning-report.json",
            "container_scanning": "ci-ml-out/gl-container-scanning-report.json",
            "dast": "ci-ml-out/gl-dast-report.json"}
    production = preview["ci-ml-promote-production"]
    assert production["rules"] == [{"if": "$CI_COMMIT_TAG =~ /^v.*$/", "when": "manual",
                                    "allow_failure": False}]
    assert production["environment"]["name"] == "production"
    assert production["cache"] == []


def test_published_gitlab_components_validate(tmp_path: Path) -> None:
    gitlab_components_validate(REPO / "gitlab", tmp_path)


# ------------------------------------------------------------------ every optional job

@pytest.fixture
def full_project(tmp_path: Path) -> Path:
    repo = tmp_path / "full"
    shutil.copytree(EXAMPLE, repo, ignore=shutil.ignore_patterns(
        ".github", ".gitlab", ".gitlab-ci.yml", ".ci-ml-cache", "__pycache__"))
    cfg = yaml.safe_load((repo / "ci-ml.yaml").read_text())
    cfg["scan"]["image"] = {"enabled": True, "image": "digits:latest"}
    cfg["scan"]["dast"] = {"enabled": True}
    cfg["ci"].update({"release_tags": "release-*", "default_branch": "trunk", "python": "3.12"})
    (repo / "ci-ml.yaml").write_text(yaml.safe_dump(cfg))
    return repo


def test_every_optional_github_job_validates(full_project: Path) -> None:
    result = run_cli("generate", "github", "--config", full_project / "ci-ml.yaml")
    assert result.code == 0, result.output
    workflow_path = full_project / ".github/workflows/ci-ml.yml"
    check_jsonschema("github-workflows", [workflow_path])
    zizmor(full_project / ".github")
    workflow = yaml.safe_load(workflow_path.read_text())
    assert workflow[True] == {"push": {"branches": ["trunk"], "tags": ["release-*"]},
                              "pull_request": None}
    dast = workflow["jobs"]["scan-dast"]
    zap = dast["services"]["zap"]
    assert re.fullmatch(r"ghcr\.io/zaproxy/zaproxy:stable@sha256:[0-9a-f]{64}", zap["image"])
    assert zap["env"] == {"ZAP_API_KEY": "${{ secrets.ZAP_API_KEY }}"}
    assert "-daemon" in zap["command"] and "$ZAP_API_KEY" in zap["command"]
    assert dast["environment"] == {"name": "dast", "deployment": False}
    scan_step = dast["steps"][-1]["with"]
    assert scan_step["zap-url"] == "http://127.0.0.1:8090"
    assert scan_step["dast-target"] == "http://host.docker.internal:8080"
    assert scan_step["zap-api-key"] == "${{ secrets.ZAP_API_KEY }}"
    image_steps = [s.get("with", {}) for s in workflow["jobs"]["scan-image"]["steps"]]
    assert {"config": "ci-ml.yaml", "out": "${{ env.CI_ML_OUT }}", "build": "true",
            "render": "false", "upload": "false"} in image_steps


def test_every_optional_gitlab_job_validates(full_project: Path, tmp_path: Path) -> None:
    result = run_cli("generate", "gitlab", "--config", full_project / "ci-ml.yaml")
    assert result.code == 0, result.output
    check_jsonschema("gitlab-ci", [full_project / ".gitlab-ci.yml"])
    preview = gitlab_preview_validates(full_project, tmp_path)
    dast = preview["ci-ml-scan-dast"]
    assert dast["services"][0]["alias"] == "zap"
    assert dast["variables"]["CI_ML_ZAP_URL"] == "http://zap:8090"
    assert dast["variables"]["CI_ML_DAST_TARGET"] == "http://build:8080"
    assert preview["ci-ml-scan-image"]["variables"]["CI_ML_BUILD_IMAGE"] == "true"
    assert preview["ci-ml-scan-image"]["variables"]["CI_ML_ZAP_URL"] == ""
    assert preview["ci-ml-gate-production"]["rules"] == [
        {"if": r"$CI_COMMIT_TAG =~ /^release\-.*$/"}]
    assert preview["ci-ml-data-check"]["image"]["name"] == "python:3.12"


def test_published_github_actions_variant_validates(full_project: Path) -> None:
    cfg = yaml.safe_load((full_project / "ci-ml.yaml").read_text())
    cfg["ci"]["github"] = {"actions": {"repository": "acme/ci-ml", "sha": SHA,
                                       "version": "v0.1.0"}}
    (full_project / "ci-ml.yaml").write_text(yaml.safe_dump(cfg))
    assert run_cli("generate", "github", "--config", full_project / "ci-ml.yaml").code == 0
    check_jsonschema("github-workflows", [full_project / ".github/workflows/ci-ml.yml"])
    zizmor(full_project / ".github")


def test_a_train_command_project_with_requirements_validates(tmp_path: Path) -> None:
    """The sklearn example's pipelines (train job: [evaluate] and `requirements`)."""
    repo = tmp_path / "repo"
    shutil.copytree(REPO / "fixtures" / "sklearn-example", repo,
                    ignore=shutil.ignore_patterns(".ci-ml-cache", "__pycache__"))
    cfg = yaml.safe_load((repo / "ci-ml.yaml").read_text())
    cfg["ci"] = {"source": {"url": "https://github.com/ci-ml/ci-ml", "ref": SHA}}
    (repo / "ci-ml.yaml").write_text(yaml.safe_dump(cfg))
    for target in ("github", "gitlab"):
        assert run_cli("generate", target, "--config", repo / "ci-ml.yaml").code == 0
    check_jsonschema("github-workflows", [repo / ".github/workflows/ci-ml.yml"])
    check_jsonschema("github-actions", sorted((repo / ".github/actions/ci-ml").glob("*/action.yml")))
    zizmor(repo / ".github")
    gitlab_components_validate(repo / ".gitlab/ci-ml", tmp_path)
    preview = gitlab_preview_validates(repo, tmp_path)
    train = preview["ci-ml-train"]
    assert train["variables"]["CI_ML_JOB_REQUIREMENTS"] == "requirements.txt"
    assert "[evaluate]" in train["variables"]["CI_ML_JOB_PACKAGE"]
    assert preview["ci-ml-prune"]["variables"]["CI_ML_JOB_REQUIREMENTS"] == ""
