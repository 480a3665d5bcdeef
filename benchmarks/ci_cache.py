"""A CI pipeline after a local `ci-ml run` versus a cold one, side by side in one run.

Target (issue: CI generation): the steps a developer already ran locally are
cache hits in CI, so the generated GitLab pipeline, run in gitlab-ci-local with
the step cache the local run filled, takes at most half the time of the same
pipeline with an empty cache. Every job still starts, installs nothing (shell
executor, ci-ml on PATH) and runs its ci-ml command: only the computing is saved.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
TARGET = 0.5


def sh(args: list[str | Path], cwd: Path, env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    proc = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True,
                          text=True, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{args[0]} failed ({proc.returncode}):\n{proc.stdout[-3000:]}{proc.stderr}")
    return elapsed


def project(root: Path) -> Path:
    repo = root / "repo"
    shutil.copytree(REPO / "fixtures" / "example", repo, ignore=shutil.ignore_patterns(
        ".ci-ml-cache", "__pycache__", ".github", ".gitlab", ".gitlab-ci.yml"))
    cfg = yaml.safe_load((repo / "ci-ml.yaml").read_text())
    # Only the steps whose commands every branch has; the example's real training.
    cfg["scan"]["deps"] = {"enabled": False}
    cfg["scan"]["model"] = {"enabled": False}
    cfg["ci"] = {"promote": False}
    (repo / "ci-ml.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return repo


def main() -> None:
    gcl = shutil.which("gitlab-ci-local")
    if not gcl:
        sys.exit("gitlab-ci-local is not installed (npm install -g gitlab-ci-local@4.60.0)")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        repo = project(root)
        bin_dir = root / "bin"
        bin_dir.mkdir()
        (bin_dir / "ci-ml").write_text(
            f'#!/bin/sh\nPYTHONPATH="{REPO}" exec "{sys.executable}" -m ci_ml "$@"\n')
        (bin_dir / "ci-ml").chmod(0o755)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CI_", "GITLAB_"))}
        env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
        ci_ml = [sys.executable, "-m", "ci_ml"]
        local_env = {**env, "PYTHONPATH": str(REPO), "CI_ML_CACHE": str(root / "warm")}
        sh([*ci_ml, "generate", "gitlab", "-q"], repo, local_env)
        for args in (["init", "-q", "-b", "main"], ["add", "-A"],
                     ["-c", "user.email=b@example.invalid", "-c", "user.name=bench",
                      "commit", "-q", "-m", "bench"]):
            sh(["git", *args], repo)
        local = sh([*ci_ml, "run", "--out", root / "local-out", "-q"], repo, local_env)
        pipeline = [gcl, "--shell-isolation", "--force-shell-executor", "--no-color",
                    "--variable", "CI_ML_INSTALL=none", "--variable"]
        warm = sh([*pipeline, f"CI_ML_CACHE={root / 'warm'}"], repo, env)
        shutil.rmtree(repo / ".gitlab-ci-local", ignore_errors=True)
        cold = sh([*pipeline, f"CI_ML_CACHE={root / 'cold'}"], repo, env)
    print(f"local ci-ml run (cold):             {local:7.1f} s")
    print(f"CI pipeline, empty step cache:      {cold:7.1f} s")
    print(f"CI pipeline, after the local run:   {warm:7.1f} s")
    ratio = warm / cold
    ok = ratio <= TARGET
    print(f"warm/cold ratio:                    {ratio:7.3f}  (target <= {TARGET}) "
          f"{'OK' if ok else 'MISSED'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
