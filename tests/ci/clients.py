"""Running generated pipelines in real CI clients: act (GitHub Actions) and gitlab-ci-local.

Both run on this machine, on the host: act with the self-hosted platform, and
gitlab-ci-local with the shell executor. Nothing is preinstalled: every job installs
ci-ml through the generated setup step, from "ci-ml's repository" (a git repository
holding this checkout's package, reachable by a file:// URL) at the commit the
pipeline pins, with the job's extra. Environments are kept per requirement in a
session-wide CI_ML_VENV_CACHE, as a self-hosted runner would keep them.
"""

from __future__ import annotations

import fcntl
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

CLIENT_TIMEOUT_S = 2400  # a cold pipeline installs every extra once; a loaded machine is slow
STEPS_LINE = re.compile(r"steps: (\d+) ran, (\d+) from cache")
INSTALL_LINE = re.compile(r"ci-ml setup: (?:pip install (.+)|(.+) is installed in )")
# The CPU build of torch on this machine's disk: the lowest end of [train]'s range.
TORCH_CONSTRAINT = (REPO / "constraints.txt").read_text()


def same_torch_as_the_jobs() -> None:
    """A local run shares step-cache entries with the CI jobs only if both run the same
    torch (its version is in the train step's key): the jobs install TORCH_CONSTRAINT's,
    so the venv running the tests must hold that one too (the Makefile pins it)."""
    from importlib.metadata import version
    (pinned,) = [line.split("==")[1].strip() for line in TORCH_CONSTRAINT.splitlines()
                 if line.startswith("torch==")]
    here = version("torch")
    assert here.split("+")[0] == pinned, (
        f"this venv has torch {here}, the CI jobs install {pinned}: the local run's cache "
        "entries cannot match theirs (make .venv pins it; rebuild the venv)")


@dataclass(frozen=True)
class Source:
    """ci-ml's repository as the pipelines see it: a git URL and a pinned commit."""

    url: str
    ref: str
    cache: Path          # CI_ML_VENV_CACHE: the runner's environments, one per requirement
    constraints: Path    # PIP_CONSTRAINT for the jobs: torch from this machine's disk

    def requirement(self, extras: str = "") -> str:
        return f"ci-ml{extras} @ git+{self.url}@{self.ref}"


def _snapshot(repo: Path) -> str:
    """This checkout's package as one commit with fixed metadata: every worker gets the same SHA."""
    shutil.rmtree(repo, ignore_errors=True)
    repo.mkdir(parents=True)
    shutil.copytree(REPO / "ci_ml", repo / "ci_ml",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, repo / name)
    env = {**os.environ, "GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z",
           "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z"}
    for args in (["init", "-q", "-b", "main"], ["add", "-A"],
                 ["commit", "-q", "-m", "ci-ml as the pipelines install it"]):
        subprocess.run(["git", "-c", "user.email=ci@example.invalid", "-c", "user.name=ci-ml",
                        "-c", "commit.gpgsign=false", *args], cwd=repo, check=True,
                       capture_output=True, env=env)
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, check=True, text=True,
                          capture_output=True).stdout.strip()


def shared_source(base_temp: Path) -> Source:
    """One source repository and one environment cache per test session, for every xdist
    worker: the first to take the lock makes the snapshot, the others reuse it."""
    root = base_temp.parent if os.environ.get("PYTEST_XDIST_WORKER") else base_temp
    shared = root / "ci-ml-source"
    with open(root / "ci-ml-source.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        ref_file = shared / "ref"
        if not ref_file.is_file():
            ref = _snapshot(shared / "ci-ml")
            (shared / "venvs").mkdir(exist_ok=True)
            (shared / "constraints.txt").write_text(TORCH_CONSTRAINT)
            ref_file.write_text(ref)
    # file://localhost/...: pip before 23.3 (the machine's Python ships 23.2) rejects a
    # requirement URL without a host; git takes both forms.
    return Source(f"file://localhost{shared / 'ci-ml'}", ref_file.read_text().strip(),
                  shared / "venvs", shared / "constraints.txt")


def installs(lines: list[str]) -> list[str]:
    """The requirements a job's setup step installed (or found installed) in its log."""
    found = []
    for line in lines:
        match = INSTALL_LINE.search(line)
        if match:
            found.append(match.group(1) or match.group(2))
    return found


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


def ci_project(root: Path, source: Source, *, ci: dict[str, object] | None = None) -> Path:
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
    cfg["ci"] = {"promote": True, "deploy": False, "zap": False,
                 "source": {"url": source.url, "ref": source.ref}, **(ci or {})}
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


def client_env() -> dict[str, str]:
    """The clients' environment: no CI variables of ours, no ci-ml on PATH, no PYTHONPATH."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GITHUB_", "GITLAB_", "CI_", "ACT", "VIRTUAL_ENV"))}
    path = [d for d in env.get("PATH", "").split(os.pathsep)
            if d and not (Path(d) / "ci-ml").exists()]
    env["PATH"] = os.pathsep.join(path)
    env.pop("PYTHONPATH", None)
    return env


def job_env(source: Source) -> dict[str, str]:
    """What the jobs get on top: the runner's environment cache and pip's settings."""
    env = {k: v for k, v in os.environ.items() if k.startswith("PIP_")}
    env.update({"CI_ML_VENV_CACHE": str(source.cache), "PIP_CONSTRAINT": str(source.constraints),
                "PATH": client_env()["PATH"]})
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
    """``steps: N ran, M from cache`` of a job whose own step is new and the rest restored.

    A step that is never cached (the DAST scan of a live endpoint) always runs.
    """
    steps = _selected(repo, (step,))
    cached = sum(1 for s in steps if s.cacheable and s.name != step)
    return len(steps) - cached, cached


def warm_counts(repo: Path, step: str) -> tuple[int, int]:
    """``steps: N ran, M from cache`` of a job whose steps all come from the cache."""
    steps = _selected(repo, (step,))
    cached = sum(1 for s in steps if s.cacheable)
    return len(steps) - cached, cached


def steps_counts(lines: list[str]) -> tuple[int, int] | None:
    """ci-ml's closing ``steps: N ran, M from cache`` line in a job's log."""
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


def run_act(repo: Path, work: Path, source: Source, *, cache: Path, out: Path,
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
            "--var", f"CI_ML_REGISTRY={registry or work / 'registry'}",
            "--var", f"CI_ML_VENV_CACHE={source.cache}",
            "--env", f"CI_ML_CACHE={cache}", "--env", f"CI_ML_OUT={out}",
            *action_placeholders(work / "placeholders")]
    for name, value in job_env(source).items():
        if name != "CI_ML_VENV_CACHE":
            args += ["--env", f"{name}={value}"]
    for name, value in (secrets or {}).items():
        args += ["--secret", f"{name}={value}"]
    if tag:
        event = work / "tag-event.json"
        event.write_text(json.dumps({"ref": f"refs/tags/{tag}", "ref_type": "tag"}))
        args += ["--eventpath", str(event)]
    proc = subprocess.run(args, cwd=repo, capture_output=True, text=True,
                          env=client_env(), timeout=CLIENT_TIMEOUT_S, check=False)
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


def run_gitlab_ci_local(repo: Path, source: Source, *,
                        variables: dict[str, str] | None = None,
                        registry: str | None = None) -> GitLabRun:
    """Run the pipeline; the model registry is ``registry`` (the CI/CD variable
    CI_ML_REGISTRY: an oci:// repository), or a host directory, as persistent storage is
    for a real runner."""
    args = [tool("gitlab-ci-local"), "--shell-isolation", "--force-shell-executor",
            "--no-color", "--variable", f"CI_ML_REGISTRY={registry or repo.parent / 'registry'}"]
    for key, value in {**job_env(source), **(variables or {})}.items():
        args += ["--variable", f"{key}={value}"]
    proc = subprocess.run(args, cwd=repo, capture_output=True, text=True,
                          env=client_env(), timeout=CLIENT_TIMEOUT_S, check=False)
    run = GitLabRun(proc.returncode, raw=proc.stdout + proc.stderr)
    for line in proc.stdout.splitlines():
        match = re.match(r"^\s*(PASS|FAIL|WARN|SKIP)\s+(\S+)\s*$", line)
        if match:
            run.results[match.group(2)] = match.group(1)
    output_dir = repo / ".gitlab-ci-local" / "output"
    for log in sorted(output_dir.glob("*.log")):
        run.logs[log.stem] = log.read_text(errors="replace").splitlines()
    return run
