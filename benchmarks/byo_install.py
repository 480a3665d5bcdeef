"""The train job of a project with its own train.command: [evaluate] against [train].

    python benchmarks/byo_install.py [--rounds 1]

What the generated train job installs for fixtures/sklearn-example (ci-ml with the
[evaluate] extra and the project's requirements.txt, one pip resolution) against what it
would need if the step still required [train] (torch and torch-pruning besides). Fresh
virtual environments from ci-ml's wheel, alternating, after an untimed install of each
that warms pip's cache; torch is the CPU build on this machine's disk (2.13.0). Prints
each round, the medians and the ratios [train] / [evaluate].
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from install import build_wheel, install

REQUIREMENTS = Path(__file__).resolve().parents[1] / "fixtures" / "sklearn-example" / \
    "requirements.txt"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ci-ml-bench-byo-") as tmp:
        work = Path(tmp)
        wheel = build_wheel(work)
        constraints = work / "constraints.txt"
        constraints.write_text("torch==2.13.0\n")
        kinds = {"[evaluate]": f"{wheel}[evaluate]", "[train]": f"{wheel}[train]"}
        more = ("-r", str(REQUIREMENTS))
        for requirement in kinds.values():        # warm pip's cache, untimed
            install(requirement, work, constraints, *more)
        results: dict[str, list[tuple[float, float]]] = {k: [] for k in kinds}
        for r in range(args.rounds):
            for kind, requirement in kinds.items():
                seconds, mb = install(requirement, work, constraints, *more)
                results[kind].append((seconds, mb))
                print(f"round {r + 1}: {kind:11s} + requirements.txt {seconds:6.1f} s  "
                      f"{mb:7.0f} MB", flush=True)
        med = {k: (statistics.median(s for s, _ in v), statistics.median(m for _, m in v))
               for k, v in results.items()}
        (lean_s, lean_mb), (full_s, full_mb) = med["[evaluate]"], med["[train]"]
        print(f"median: [evaluate] {lean_s:.1f} s, {lean_mb:.0f} MB; [train] {full_s:.1f} s, "
              f"{full_mb:.0f} MB")
        print(f"[train] / [evaluate]: {full_s / lean_s:.1f}x the time, "
              f"{full_mb / lean_mb:.1f}x the size")
    return 0


if __name__ == "__main__":
    sys.exit(main())
