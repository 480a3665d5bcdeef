"""``ci-ml init``: write a commented ci-ml.yaml for an existing project.

It finds the project's CSV files, picks the train and test split by name,
guesses (or asks for) the target column, and only writes a file that the
config schema accepts, so the next command can be ``ci-ml run``.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import yaml

from ci_ml.config import validate
from ci_ml.errors import InputError, UsageError
from ci_ml.fsutil import IGNORED_DIRS, atomic_write_text
from ci_ml.scan.advisory_source import AdvisorySource

TARGET_NAMES = ("label", "target", "class", "y", "outcome", "species", "labels")
AskFn = Callable[[list[str], str], str]


def find_csvs(root: Path) -> list[Path]:
    found = []
    for path in sorted(root.rglob("*.csv")):
        rel = path.relative_to(root)
        if any(part in IGNORED_DIRS or part.startswith(".") for part in rel.parts[:-1]):
            continue
        found.append(path)
    return found


def pick_splits(csvs: list[Path], root: Path) -> tuple[Path, Path]:
    def named(*words: str) -> list[Path]:
        return [p for p in csvs if any(w in p.stem.lower() for w in words)]

    train, test = named("train"), named("test", "eval", "valid", "holdout")
    if train and test:
        return train[0], test[0]
    names = ", ".join(str(p.relative_to(root)) for p in csvs) or "none"
    raise InputError(
        f"{root}: ci-ml needs a training and a test CSV (names containing 'train' and "
        f"'test'); found: {names}"
    )


def read_header(path: Path) -> list[str]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            header = next(csv.reader(fh), [])
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read CSV header ({exc})") from exc
    if not header:
        raise InputError(f"{path}: empty CSV, expected a header row")
    return [h.strip() for h in header]


def guess_target(columns: list[str]) -> str:
    lowered = {c.lower(): c for c in columns}
    for name in TARGET_NAMES:
        if name in lowered:
            return lowered[name]
    return columns[-1]


def _deps_block(source: AdvisorySource | None) -> str:
    """scan.deps lines for an advisory source that works where init ran (see advisory_source)."""
    if source is None or source.kind == "none":
        note = "# no advisory source answered where `ci-ml init` ran: set one" if source else ""
        return f"    service: osv                 {note}\n"
    if source.kind == "mirror":
        return (f"    advisories: {json.dumps(source.advisories)}   # offline OSV mirror, "
                "served to pip-audit on loopback\n")
    url = f"    osv_url: {json.dumps(source.osv_url)}\n" if source.osv_url else ""
    return "    service: osv                 # the OSV service answered where init ran\n" + url


def render_config(root: Path, train: Path, test: Path, target: str, n_features: int,
                  advisory: AdvisorySource | None = None) -> str:
    rel = lambda p: p.relative_to(root).as_posix()  # noqa: E731
    code_paths = [d for d in ("src",) if (root / d).is_dir()] or ["."]
    has_reqs = (root / "requirements.txt").is_file()
    return f"""\
# ci-ml configuration, written by `ci-ml init`. Paths are relative to this file.
# Every key is checked against ci-ml's schema before anything runs.
version: 1
project:
  name: {root.resolve().name.replace(' ', '-') or 'model'}

data:
  train: {rel(train)}
  test: {rel(test)}
  target: {target}               # the label column
  # features: [a, b, c]          # default: every column but the target ({n_features} here)
  scale: 1.0                     # features are divided by this
  normalize: standard            # z-score with the training set's mean/std (kept with the model)

model:
  name: mlp                      # built-in: mlp, cnn; or your own 'package.module:factory'
  params:
    hidden: [64, 32]

train:
  epochs: 20
  batch_size: 64
  learning_rate: 0.001
  seed: 0                        # same inputs + seed -> same weights

prune:
  enabled: true
  max_accuracy_drop: 1.0         # percentage points the pruned model may lose

scan:
  code:
    paths: {code_paths}
  deps:
    enabled: {str(has_reqs).lower()}
    requirements: [requirements.txt]
{_deps_block(advisory)}  model: {{}}

policy:
  staging:
    metrics:
      accuracy: {{min: 0.8}}
    findings: {{critical: 0, high: 0}}
    scanners: {{deps: {{medium: 0}}}}   # a known advisory on a pin blocks (waive it to accept)
    required_scans: [code{', deps' if has_reqs else ''}]
  production:
    metrics:
      accuracy: {{min: 0.9}}
    findings: {{critical: 0, high: 0, medium: 0}}
    required_scans: [code{', deps' if has_reqs else ''}]
"""


def init_project(directory: Path, *, target: str | None = None, force: bool = False,
                 ask: AskFn | None = None, advisory: AdvisorySource | None = None) -> Path:
    root = directory.resolve()
    if not root.is_dir():
        raise UsageError(f"{directory}: not a directory")
    dest = root / "ci-ml.yaml"
    if dest.exists() and not force:
        raise UsageError(f"{dest} already exists (use --force to overwrite)")
    train, test = pick_splits(find_csvs(root), root)
    columns = read_header(train)
    if target is None:
        guess = guess_target(columns)
        target = ask(columns, guess) if ask else guess
    if target not in columns:
        raise InputError(f"{train}: no column {target!r}; columns are: {', '.join(columns[:10])}")
    text = render_config(root, train, test, target, len(columns) - 1, advisory)
    validate(yaml.safe_load(text), dest)
    atomic_write_text(dest, text)
    return dest
