"""ci-ml's own published steps: ``actions/<step>/action.yml`` and ``gitlab/<step>.yml``.

They are rendered from the same templates as the copies ``ci-ml generate`` writes
into a project, so there is one source. Regenerate them after changing a template:

    python -m ci_ml.ci.assets            # write
    python -m ci_ml.ci.assets --check    # exit 1 and show a diff if stale
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import ci_ml
from ci_ml.ci.generate import drift, write_files
from ci_ml.ci.interface import GeneratedFile
from ci_ml.ci.registry import TARGETS


def published_files() -> list[GeneratedFile]:
    return [f for target in TARGETS.values() for f in target().step_files()]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ci_ml.ci.assets", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path(ci_ml.__file__).resolve().parents[1],
                        help="ci-ml's repository root (default: the checkout this package is in)")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if stale")
    args = parser.parse_args(argv)
    files = published_files()
    if args.check:
        stale = drift(files, args.root)
        for item in stale:
            sys.stdout.write(item.diff)
        return 1 if stale else 0
    for path in write_files(files, args.root):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
