"""`ci-ml scan code` versus raw bandit on the same tree, side by side.

Target: ci-ml at most 1.10x raw bandit (the wrapper's cost: starting ci-ml,
validating the config, hashing the inputs for the cache key, normalizing the
findings and writing findings.json, SARIF, GitLab, JUnit and Markdown reports).

The tree is a real project: setuptools' source as installed in the venv (~65k
lines; pytest's ``_pytest``, ~40k lines, if setuptools is absent), copied into a
throwaway project. Runs alternate (raw, ci-ml, raw, ...) so both see the same
machine; every ci-ml run uses --force (no cache). Each run's CPU time (user+sys of
the process and of the tools it waited for, from wait4) and wall time are recorded.
The verdict is the median of the per-pair CPU-time ratios: both commands are
single-threaded and sequential, so on an idle machine CPU time is their wall time,
while on a shared machine wall time mostly measures the neighbours; pairing runs
back to back keeps both sides of a ratio under the same load. The ratio of the
best CPU times and the wall-time ratios are printed too. The bundled example's
src/ (50 lines, where ci-ml's fixed start-up cost of ~0.35 s CPU, mostly imports,
dominates) is shown for information.

Usage: python benchmarks/scan.py [--rounds N]   (exit 1 if the target is missed)
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _pytest

try:
    import setuptools
except ImportError:  # pragma: no cover - a venv without setuptools
    setuptools = None  # type: ignore[assignment]

REPO = Path(__file__).resolve().parents[1]
TARGET = 1.10
CONFIG = """\
data: {train: data/train.csv, test: data/test.csv, target: label}
model: {name: mlp}
scan:
  code:
    paths: [src]
"""


Sample = tuple[float, float]  # (cpu seconds, wall seconds)


def _timed(cmd: list[str], cwd: Path, env: dict[str, str], ok: tuple[int, ...]) -> Sample:
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    assert proc.stderr is not None
    errors = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if proc.returncode not in ok:
        raise SystemExit(f"{cmd[0]} failed ({proc.returncode}): {errors[-400:]!r}")
    return usage.ru_utime + usage.ru_stime, wall


def measure(tree: Path, rounds: int) -> tuple[list[Sample], list[Sample], Sample]:
    with tempfile.TemporaryDirectory(prefix="ci-ml-bench-") as tmp:
        project = Path(tmp) / "project"
        shutil.copytree(tree, project / "src" / tree.name,
                        ignore=shutil.ignore_patterns("__pycache__"))
        (project / "ci-ml.yaml").write_text(CONFIG)
        env = {**os.environ, "PYTHONPATH": str(REPO), "CI": "true"}
        # Byte-compiled like any installed package (bandit's are): the warm-up writes the .pyc.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        bandit = str(Path(sys.executable).parent / "bandit")
        raw_cmd = [bandit, "-r", "-f", "json", "-q", "src"]
        ciml_cmd = [sys.executable, "-m", "ci_ml", "scan", "code", "--config", "ci-ml.yaml",
                    "--out", str(Path(tmp) / "out"), "--force", "-q"]
        # Warm-up: file cache, bytecode, and a first ci-ml run that fills the step cache.
        _timed(raw_cmd, project, env, (0, 1))
        _timed(ciml_cmd, project, env, (0,))
        raw, ciml = [], []
        for _ in range(rounds):
            raw.append(_timed(raw_cmd, project, env, (0, 1)))
            ciml.append(_timed(ciml_cmd, project, env, (0,)))
        cached = _timed(ciml_cmd[:-2] + ["-q"], project, env, (0,))  # without --force
    return raw, ciml, cached


def _line(label: str, samples: list[Sample]) -> str:
    cpu, wall = [s[0] for s in samples], [s[1] for s in samples]
    return (f"  {label:<17} cpu median {statistics.median(cpu):7.3f} s (min {min(cpu):6.3f})"
            f"   wall median {statistics.median(wall):7.3f} s (min {min(wall):6.3f})")


def report(name: str, tree: Path, rounds: int) -> float:
    raw, ciml, cached = measure(tree, rounds)
    lines = sum(len(p.read_text(errors="replace").splitlines()) for p in tree.rglob("*.py"))
    cpu_ratios = [c[0] / r[0] for r, c in zip(raw, ciml, strict=True)]
    wall_ratios = [c[1] / r[1] for r, c in zip(raw, ciml, strict=True)]
    best = min(c[0] for c in ciml) / min(r[0] for r in raw)
    ratio = statistics.median(cpu_ratios)
    print(f"{name}: {tree} ({lines} lines of Python), {rounds} alternating rounds")
    print(_line("raw bandit", raw))
    print(_line("ci-ml scan code", ciml))
    print(f"  ci-ml (cached)    cpu {cached[0]:7.3f} s   wall {cached[1]:7.3f} s")
    print(f"  ratio ci-ml/raw   cpu pairs median {ratio:.3f} ("
          + ", ".join(f"{r:.3f}" for r in cpu_ratios) + ")")
    print(f"                    best cpu {best:.3f}")
    print(f"                    wall pairs median {statistics.median(wall_ratios):.3f} ("
          + ", ".join(f"{r:.3f}" for r in wall_ratios) + ")")
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    module = setuptools if setuptools is not None else _pytest
    ratio = report("target tree", Path(module.__file__).parent, args.rounds)
    report("bundled example (info)", REPO / "fixtures" / "example" / "src", args.rounds)
    verdict = "PASS" if ratio <= TARGET else "FAIL"
    print(f"{verdict}: ci-ml scan code / raw bandit = {ratio:.3f} (target <= {TARGET:.2f})")
    sys.exit(0 if ratio <= TARGET else 1)


if __name__ == "__main__":
    main()
