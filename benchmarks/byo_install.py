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
import sys
from pathlib import Path

from install import compare

REQUIREMENTS = Path(__file__).resolve().parents[1] / "fixtures" / "sklearn-example" / \
    "requirements.txt"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    med = compare({"[evaluate]": "[evaluate]", "[train]": "[train]"}, args.rounds,
                  "-r", str(REQUIREMENTS))
    (lean_s, lean_mb), (full_s, full_mb) = med["[evaluate]"], med["[train]"]
    print(f"median (with requirements.txt): [evaluate] {lean_s:.1f} s, {lean_mb:.0f} MB; "
          f"[train] {full_s:.1f} s, {full_mb:.0f} MB")
    print(f"[train] / [evaluate]: {full_s / lean_s:.1f}x the time, "
          f"{full_mb / lean_mb:.1f}x the size")
    return 0


if __name__ == "__main__":
    sys.exit(main())
