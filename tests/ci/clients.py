"""Running generated pipelines in real CI clients: act (GitHub Actions) and gitlab-ci-local.

Both run on this machine, on the host: act with the self-hosted platform, and
gitlab-ci-local with the shell executor. The jobs call the ci-ml of this
checkout through a small ``ci-ml`` wrapper put first on PATH, which is what a
self-hosted runner with ci-ml installed looks like (install: none).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ci_ml.ci.pins import ACTIONS
from tests.conftest import EXAMPLE, FIXTURES, REPO, run_cli

CLIENT_TIMEOUT_S = 900
STEPS_LINE = re.compile(r"steps: (\d+) run, (\d+) cached")


def tool(name: str) -> str:
    """A CI tool beside the test interpreter (venv) or on PATH; missing is a failure."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside)
    found = shutil.which(name)
    assert found, f"{name} is not installed (needed to run the generated pipelines)"
    return found


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.email=ci@example.invalid", "-c", "user.name=ci-ml tests",
                    "-c", "commit.gpgsign=false", *args], cwd=repo, check=True,
                   capture_output=True, text=True)


def ci_project(root: Path, *, ci: dict[str, object] | None = None) -> Path:
    """A git repository holding the example project, with a config fit for plumbing tests.

    Short training, a tiny CNN, one pruning trial; the example's scans (code,
    deps, model, DAST with ci-ml's built-in engine: no ZAP container here);
    promotion without the deploy step (no `ci-ml deploy build` yet).
    """
    repo = root / "repo"
    shutil.copytree(EXAMPLE, repo, ignore=shutil.ignore_patterns(
        ".ci-ml-cache", "__pycache__", ".github", ".gitlab", ".gitlab-ci.yml"))
    cfg_path = repo / "ci-ml.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["train"]["epochs"] = 2
    cfg["model"]["params"]["channels"] = [8, 16, 16]
    cfg["prune"] = {"enabled": True, "ratio": 0.25, "steps": 1, "finetune_epochs": 1,
                    "quantize": "off", "max_accuracy_drop": 100}
    for stage in ("staging", "production"):
        cfg["policy"][stage]["metrics"] = {"accuracy": {"min": 0.5}}
    # The offline advisory mirror is a host directory, as on a self-hosted runner.
    cfg["scan"]["deps"]["advisories"] = str(FIXTURES / "advisories" / "pypa-vulns")
    # The example leaves DAST to `ci-ml scan dast`; here its CI job runs too.
    cfg["scan"]["dast"] = {**cfg["scan"].get("dast", {}), "enabled": True}
    cfg["ci"] = {"promote": True, "deploy": False, "zap": False, **(ci or {})}
    # The public key committed with the project; its private half is the CI secret.
    keys = repo / "keys"
    keys.mkdir()
    shutil.copy(signing_key(root).with_name("signing.pem.pub"), keys / "ci-ml.pub")
    cfg["registry"] = {"verify_key": "keys/ci-ml.pub"}
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=repo, check=True)
    return repo


def signing_key(directory: Path) -> Path:
    """The project's ed25519 key, made by `ci-ml registry keygen` (PEM, mode 600) once."""
    key = directory / "signing.pem"
    if key.is_file():
        return key
    result = run_cli("registry", "keygen", key)
    assert result.code == 0, result.output
    return key


def generate(repo: Path, target: str) -> None:
    result = run_cli("generate", target, "--config", repo / "ci-ml.yaml")
    assert result.code == 0, result.output
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", f"ci-ml generate {target}")


def ci_ml_wrapper(bin_dir: Path) -> Path:
    """`ci-ml` on PATH for the jobs: this checkout's ci-ml in the test interpreter."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    wrapper = bin_dir / "ci-ml"
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH="{REPO}" exec "{sys.executable}" -m ci_ml "$@"\n')
    wrapper.chmod(0o755)
    return bin_dir


def client_env(bin_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GITHUB_", "GITLAB_", "CI_", "ACT"))}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env.pop("PYTHONPATH", None)
    return env


def _selected(repo: Path, only: tuple[str, ...]) -> list[Any]:
    from ci_ml.config import load_config
    from ci_ml.pipeline.runner import select_steps

    config = load_config(repo / "ci-ml.yaml")
    return [s for s in select_steps(config, list(only) or None) if s().enabled(config)]


def enabled_steps(repo: Path, *only: str) -> list[str]:
    """The steps a command runs (``only`` plus what it needs), as ci-ml selects them."""
    return [s.name for s in _selected(repo, only)]


def manifest_steps(repo: Path) -> list[str]:
    """The records of a whole run's manifest.json: every step, disabled ones too."""
    from ci_ml.pipeline.registry import STEPS

    return list(STEPS)


def fresh_counts(repo: Path, step: str) -> tuple[int, int]:
    """``steps: N run, M cached`` of a job whose own step is new and the rest restored.

    A step that is never cached (the DAST scan of a live endpoint) always runs.
    """
    steps = _selected(repo, (step,))
    return len(steps), sum(1 for s in steps if s.cacheable and s.name != step)


def warm_counts(repo: Path, step: str) -> tuple[int, int]:
    """``steps: N run, M cached`` of a job whose steps all come from the cache."""
    steps = _selected(repo, (step,))
    return len(steps), sum(1 for s in steps if s.cacheable)


def steps_counts(lines: list[str]) -> tuple[int, int] | None:
    """ci-ml's closing ``steps: N run, M cached`` line in a job's log."""
    for line in reversed(lines):
        match = STEPS_LINE.search(line)
        if match:
            return int(match.group(1)), int(match.group(2))
    return None


# ---------------------------------------------------------------- act (GitHub Actions)

@dataclass
class ActRun:
    returncode: int
    results: dict[str, str] = field(default_factory=dict)      # job id -> success/failure
    logs: dict[str, list[str]] = field(default_factory=dict)   # job id -> messages
    summaries: dict[str, list[str]] = field(default_factory=dict)
    raw: str = ""


def action_placeholders(root: Path) -> list[str]:
    """``--local-repository`` flags for every pinned remote action.

    act loads each remote action a job references before the job starts, even one
    whose step is skipped, and it cannot fetch them offline. Every remote step in
    ci-ml's workflow and actions is guarded by ``!env.ACT``, so act only needs
    something to load: a placeholder that fails the job if it ever runs.
    """
    flags = []
    for pin in ACTIONS.values():
        owner, name, *subpath = pin.repository.split("/")
        stub = root / f"{owner}-{name}"
        action_dir = stub.joinpath(*subpath)
        action_dir.mkdir(parents=True, exist_ok=True)
        (action_dir / "action.yml").write_text(
            "name: placeholder\n"
            "description: stands in for a remote action that act cannot fetch offline\n"
            "runs:\n  using: composite\n  steps:\n"
            "    - shell: bash\n"
            "      run: echo 'placeholder for a remote action ran under act'; exit 1\n")
        flags += ["--local-repository", f"{owner}/{name}@{pin.sha}={stub}"]
    return flags


def run_act(repo: Path, work: Path, bin_dir: Path, *, cache: Path, out: Path,
            tag: str | None = None, secrets: dict[str, str] | None = None,
            registry: str | None = None) -> ActRun:
    """Run the generated workflow as a push (to main, or of ``tag``) in act.

    The model registry is ``registry`` (the repository variable CI_ML_REGISTRY: an
    oci:// repository), or a host directory, as persistent storage is for a real runner.
    """
    args = [tool("act"), "push", "--json",
            "-P", "ubuntu-latest=-self-hosted", "--action-offline-mode",
            "--action-cache-path", str(work / "act-cache"), "--no-cache-server",
            "--defaultbranch", "main",
            # One job at a time: on the host, the jobs share --out and the step cache.
            "--concurrent-jobs", "1",
            "--var", "CI_ML_INSTALL=none",
            "--var", f"CI_ML_REGISTRY={registry or work / 'registry'}",
            "--env", f"CI_ML_CACHE={cache}", "--env", f"CI_ML_OUT={out}",
            "--env", f"PATH={client_env(bin_dir)['PATH']}",
            *action_placeholders(work / "placeholders")]
    for name, value in (secrets or {}).items():
        args += ["--secret", f"{name}={value}"]
    if tag:
        event = work / "tag-event.json"
        event.write_text(json.dumps({"ref": f"refs/tags/{tag}", "ref_type": "tag"}))
        args += ["--eventpath", str(event)]
    proc = subprocess.run(args, cwd=repo, capture_output=True, text=True,
                          env=client_env(bin_dir), timeout=CLIENT_TIMEOUT_S, check=False)
    run = ActRun(proc.returncode, raw=proc.stdout + proc.stderr)
    for line in proc.stdout.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        job = entry.get("jobID")
        if not job:
            continue
        msg = str(entry.get("msg", ""))
        run.logs.setdefault(job, []).append(msg)
        if "jobResult" in entry:
            run.results[job] = entry["jobResult"]
        if "Summary - " in msg:
            run.summaries.setdefault(job, []).append(msg.split("Summary - ", 1)[1])
    return run


# ---------------------------------------------------------------- gitlab-ci-local

@dataclass
class GitLabRun:
    returncode: int
    results: dict[str, str] = field(default_factory=dict)      # job name -> PASS/FAIL/...
    logs: dict[str, list[str]] = field(default_factory=dict)
    raw: str = ""

    def artifacts(self, repo: Path, job: str) -> Path:
        return repo / ".gitlab-ci-local" / "artifacts" / job


def run_gitlab_ci_local(repo: Path, bin_dir: Path, *, variables: dict[str, str] | None = None,
                        registry: str | None = None) -> GitLabRun:
    """Run the pipeline; the model registry is ``registry`` (the CI/CD variable
    CI_ML_REGISTRY: an oci:// repository), or a host directory."""
    args = [tool("gitlab-ci-local"), "--shell-isolation", "--force-shell-executor",
            "--no-color", "--variable", "CI_ML_INSTALL=none",
            "--variable", f"CI_ML_REGISTRY={registry or repo.parent / 'registry'}"]
    for key, value in (variables or {}).items():
        args += ["--variable", f"{key}={value}"]
    proc = subprocess.run(args, cwd=repo, capture_output=True, text=True,
                          env=client_env(bin_dir), timeout=CLIENT_TIMEOUT_S, check=False)
    run = GitLabRun(proc.returncode, raw=proc.stdout + proc.stderr)
    for line in proc.stdout.splitlines():
        match = re.match(r"^\s*(PASS|FAIL|WARN|SKIP)\s+(\S+)\s*$", line)
        if match:
            run.results[match.group(2)] = match.group(1)
    output_dir = repo / ".gitlab-ci-local" / "output"
    for log in sorted(output_dir.glob("*.log")):
        run.logs[log.stem] = log.read_text(errors="replace").splitlines()
    return run
