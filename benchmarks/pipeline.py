"""Cold versus warm `ci-ml run` on the bundled example, side by side in one run.

Target (issue: spine): a warm run with nothing changed takes at most 10% of the cold run.
Both runs are whole `ci-ml run` processes on a private copy of the example with its own
cache, so start-up and cache restore are included in the warm time.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def timed_run(project: Path, *extra: str) -> float:
    env = {**os.environ, "PYTHONPATH": str(REPO), "CI": "true"}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "ci_ml", "run", "--out", "out", "-q", *extra],
                          cwd=project, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"ci-ml run failed ({proc.returncode}):\n{proc.stderr}")
    return elapsed


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp) / "example"
        shutil.copytree(REPO / "fixtures" / "example", project,
                        ignore=shutil.ignore_patterns(".ci-ml-cache", "out"))
        # The example audits its pins against ../advisories (the vendored OSV mirror).
        (Path(tmp) / "advisories").symlink_to(REPO / "fixtures" / "advisories")
        cold = timed_run(project)
        warm = statistics.median(timed_run(project) for _ in range(3))
        forced = timed_run(project, "--force")
    print(f"cold run:           {cold:7.2f} s")
    print(f"warm run (median3): {warm:7.2f} s")
    print(f"forced run:         {forced:7.2f} s")
    ratio = warm / cold
    print(f"warm/cold ratio:    {ratio:7.3f}  (target <= 0.10) {'OK' if ratio <= 0.10 else 'MISSED'}")
    sys.exit(0 if ratio <= 0.10 else 1)


if __name__ == "__main__":
    main()
