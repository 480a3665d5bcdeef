"""Install time and installed size: the gate job's install against the full install.

    python benchmarks/install.py [--rounds 2]

Builds ci-ml's wheel once, then installs it into fresh virtual environments, alternating:
the core install (what the generated gate job installs: no torch, no scanners) and the
full install (`[all]`, what every job installed before the extras existed). pip's cache
is warmed by an untimed first install of each, so the rounds compare installing, not
downloading. torch is pinned to the CPU build on this machine's disk (2.13.0).
Prints each round, the medians and the ratios full / core.
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

REPO = Path(__file__).resolve().parents[1]


def build_wheel(work: Path) -> Path:
    src = work / "src"
    shutil.copytree(REPO / "ci_ml", src / "ci_ml", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir",
                    str(work / "dist"), str(src)], check=True, capture_output=True)
    return next((work / "dist").glob("ci_ml-*.whl"))


def size_mb(root: Path) -> float:
    total = sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())
    return total / 1e6


def install(requirement: str, work: Path, constraints: Path, *more: str) -> tuple[float, float]:
    """(seconds, MB of the environment) for one fresh venv with ``requirement`` (and ``more``
    pip arguments, e.g. ``-r requirements.txt``, in the same resolution)."""
    venv = Path(tempfile.mkdtemp(dir=work, prefix="venv-"))
    env = {**os.environ, "PIP_CONSTRAINT": str(constraints)}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
                    "--no-compile", "--disable-pip-version-check", requirement, *more], check=True,
                   env=env,
                   capture_output=True)
    seconds = time.perf_counter() - start
    mb = size_mb(venv)
    shutil.rmtree(venv)
    return seconds, mb


def compare(kinds: dict[str, str], rounds: int, *more: str) -> dict[str, tuple[float, float]]:
    """Median (seconds, MB) per kind: label -> the extras after the wheel ("" or "[all]"),
    each installed with ``more`` pip arguments; prints every round."""
    with tempfile.TemporaryDirectory(prefix="ci-ml-bench-install-") as tmp:
        work = Path(tmp)
        wheel = build_wheel(work)
        constraints = Path(__file__).resolve().parents[1] / "constraints.txt"
        for extras in kinds.values():              # warm pip's cache, untimed
            install(f"{wheel}{extras}", work, constraints, *more)
        results: dict[str, list[tuple[float, float]]] = {k: [] for k in kinds}
        for r in range(rounds):
            for kind, extras in kinds.items():
                seconds, mb = install(f"{wheel}{extras}", work, constraints, *more)
                results[kind].append((seconds, mb))
                print(f"round {r + 1}: {kind:16s} {seconds:6.1f} s  {mb:7.0f} MB", flush=True)
    return {k: (statistics.median(s for s, _ in v), statistics.median(m for _, m in v))
            for k, v in results.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    med = compare({"core (gate job)": "", "full ([all])": "[all]"}, args.rounds)
    (core_s, core_mb), (full_s, full_mb) = med["core (gate job)"], med["full ([all])"]
    print(f"median: core {core_s:.1f} s, {core_mb:.0f} MB; full {full_s:.1f} s, "
          f"{full_mb:.0f} MB")
    print(f"full / core: {full_s / core_s:.1f}x the time, {full_mb / core_mb:.1f}x the size")
    return 0


if __name__ == "__main__":
    sys.exit(main())
