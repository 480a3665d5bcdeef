"""The data check's memory does not grow with the number of rows.

A scalability test, so the data are generated (by the benchmark's own generator,
``benchmarks/data_check.py``): the same columns at N and 4N rows. Peak RSS is the
child's own ``ru_maxrss`` (``os.wait4``); no wall-clock time is asserted.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import REPO

# ~45 MB: past the reader's fixed buffers (32 blocks of 1 MiB read ahead); at 4N the
# training split has more row hashes than the in-memory budget, so they spill.
ROWS = 500_000


def _benchmark() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_data_check",
                                                  REPO / "benchmarks" / "data_check.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _peak_mb(project: Path) -> tuple[float, dict[str, int]]:
    """Run ``ci-ml data check`` on ``project``: its peak RSS (MB) and the rows it read."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "CI": "true"}
    env.pop("ARROW_DEFAULT_MEMORY_POOL", None)
    with open(project / "stderr.txt", "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "ci_ml", "data", "check", "-q",
                                 "--out", "out"], cwd=project, env=env,
                                stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode in (0, 1), (project / "stderr.txt").read_text()
    report = json.loads((project / "out" / "data-report.json").read_text())
    return usage.ru_maxrss / 1024, report["rows"]


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_rows(tmp_path: Path) -> None:
    bench = _benchmark()
    peaks = {}
    for rows in (ROWS, 4 * ROWS):
        project = tmp_path / str(rows)
        project.mkdir()
        bench.generate(project / "train.csv", rows, seed=1)
        bench.generate(project / "test.csv", rows // 10, seed=2, shift=0.3)
        (project / "ci-ml.yaml").write_text(bench.CONFIG)
        peak, read = _peak_mb(project)
        assert read == {"train": rows, "test": rows // 10}
        peaks[rows] = peak
        (project / "train.csv").unlink()   # 180 MB of disk, no longer needed
    small, large = peaks[ROWS], peaks[4 * ROWS]
    print(f"peak RSS {small:.0f} MB at {ROWS:,} rows, {large:.0f} MB at {4 * ROWS:,}")
    # Before the fix, 4x the rows took 1.42x the memory (86 bytes a row); bounded
    # memory leaves the two peaks within allocator noise of each other.
    assert large / small < 1.2, peaks
    assert (large - small) * 1e6 / (3 * ROWS) < 40, peaks   # bytes per extra row
