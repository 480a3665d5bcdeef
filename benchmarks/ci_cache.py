"""A CI pipeline after a local `ci-ml run` versus a cold one, side by side in one run.

Target (issue: CI generation): the steps a developer already ran locally are cache
hits in CI. Measured on the generated GitLab pipeline run in gitlab-ci-local: the
time the jobs spend in ci-ml's steps (from each job's manifest.json) after a local
run on the same step cache is at most 10% of the time the steps take in a cold
pipeline. Wall times are printed too: every job still starts, and that fixed cost
(a shell, ci-ml's start-up, copying the repository) is not something a cache removes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
TARGET = 0.10
# Which steps each job's own command runs (it restores the others it needs, quickly).
# DAST scans a live endpoint and is never cached: it is left out of both sums.
JOB_STEPS = {"ci-ml-data-check": ("data-check",), "ci-ml-train": ("train",),
             "ci-ml-prune": ("prune",), "ci-ml-scan-code": ("scan-code",),
             "ci-ml-scan-deps": ("scan-deps",), "ci-ml-scan-model": ("scan-model",),
             "ci-ml-gate-staging": ("gate",)}


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
    # The example's real training and scans; the advisory mirror as a host directory,
    # DAST with the built-in engine (no ZAP container here); no promotion.
    cfg["scan"]["deps"]["advisories"] = str(REPO / "fixtures" / "advisories" / "pypa-vulns")
    cfg["ci"] = {"promote": False, "zap": False}
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
        warm_steps, warm_hits, warm_total = step_seconds(repo)
        shutil.rmtree(repo / ".gitlab-ci-local", ignore_errors=True)
        cold = sh([*pipeline, f"CI_ML_CACHE={root / 'cold'}"], repo, env)
        cold_steps, cold_hits, _ = step_seconds(repo)
    print(f"local ci-ml run (cold):                 {local:7.1f} s wall")
    print(f"CI pipeline, empty step cache:          {cold:7.1f} s wall, "
          f"{cold_steps:6.2f} s in steps ({cold_hits} cache hits)")
    print(f"CI pipeline, after the local run:       {warm:7.1f} s wall, "
          f"{warm_steps:6.2f} s in steps ({warm_hits} of {warm_total} cache hits)")
    ratio = warm_steps / cold_steps
    ok = ratio <= TARGET and warm_hits == warm_total
    print(f"time in steps, warm/cold:               {ratio:7.4f}  (target <= {TARGET}, "
          f"all cache hits) {'OK' if ok else 'MISSED'}")
    sys.exit(0 if ok else 1)


def step_seconds(repo: Path) -> tuple[float, int, int]:
    """Seconds the jobs spent in ci-ml steps, cache hits, and step records, over all jobs."""
    seconds, hits, total = 0.0, 0, 0
    for manifest in (repo / ".gitlab-ci-local" / "artifacts").glob("*/ci-ml-out/manifest.json"):
        job = manifest.parts[-3]
        steps = json.loads(manifest.read_text())["steps"]
        # A job's manifest also lists the steps of the jobs before it (from their
        # artifacts): count only the records this job's command produced.
        mine = [s for s in steps if s["name"] in JOB_STEPS.get(job, ())]
        seconds += sum(float(s["duration_s"]) for s in mine)
        hits += sum(1 for s in mine if s["cached"])
        total += len(mine)
    return seconds, hits, total


if __name__ == "__main__":
    main()
