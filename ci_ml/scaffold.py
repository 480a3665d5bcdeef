"""``ci-ml init``: write a commented ci-ml.yaml for an existing project.

It finds the project's data (CSV or Parquet), picks the train and test split by
name, or, with a single data file, offers a seeded split (stratified by the target's
classes, or by its quantiles for a regression target) and writes it beside the
file; guesses (or asks for) the target column, infers the task from it, names the
identifier-like columns it will leave out, and only writes a config the schema
accepts, so the next command can be ``ci-ml run``.
It also makes the key pair that signs the registry's history: the private key
git-ignored, the public key to commit, both named in the config.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ci_ml.attest.keys import generate_keypair, load_private_key
from ci_ml.config import validate
from ci_ml.data.profile import profile_batches
from ci_ml.data.schema import CLASSIFICATION, DataSchema, infer_schema
from ci_ml.data.source import DataFile, iter_batches, open_data
from ci_ml.errors import InputError, UsageError
from ci_ml.fsutil import IGNORED_DIRS, atomic_write_bytes, atomic_write_text
from ci_ml.scan.advisory_source import AdvisorySource

KEY_DIR = ".ci-ml/keys"
SIGNING_KEY = f"{KEY_DIR}/signing.pem"
VERIFY_KEY = f"{SIGNING_KEY}.pub"
# Inside the key directory, so that the private key stays out of git whatever the
# project's own .gitignore says; the public key and this file are committed.
KEY_GITIGNORE = "# ci-ml: the private signing key never enters git\n*\n!.gitignore\n!*.pub\n"

TARGET_NAMES = ("label", "target", "class", "y", "outcome", "species", "labels")
DATA_SUFFIXES = (".csv", ".parquet", ".pq")
AskFn = Callable[[list[str], str], str]
ConfirmFn = Callable[[str], bool]


def find_data(root: Path) -> list[Path]:
    found = []
    for path in sorted(p for s in DATA_SUFFIXES for p in root.rglob(f"*{s}")):
        rel = path.relative_to(root)
        if any(part in IGNORED_DIRS or part.startswith(".") for part in rel.parts[:-1]):
            continue
        if rel.parts and rel.parts[0] in ("ci-ml-out", "out"):
            continue
        found.append(path)
    return found


find_csvs = find_data  # the name before Parquet support


def pick_splits(files: list[Path], root: Path) -> tuple[Path, Path] | None:
    """The train and test files by name, or None when the project has no such pair."""
    def named(*words: str) -> list[Path]:
        return [p for p in files if any(w in p.stem.lower() for w in words)]

    train, test = named("train"), named("test", "eval", "valid", "holdout")
    if train and test:
        return train[0], test[0]
    return None


def read_header(path: Path) -> list[str]:
    return list(open_data(path, "data").columns)


def guess_target(columns: list[str]) -> str:
    lowered = {c.lower(): c for c in columns}
    for name in TARGET_NAMES:
        if name in lowered:
            return lowered[name]
    return columns[-1]


@dataclass(frozen=True)
class Split:
    train: Path
    test: Path
    rows: tuple[int, int]
    stratified_by: str


def _split_paths(source: Path) -> tuple[Path, Path]:
    suffix = source.suffix
    return (source.with_name(f"{source.stem}.train{suffix}"),
            source.with_name(f"{source.stem}.test{suffix}"))


def _strata(values: Sequence[Any], task: str) -> np.ndarray:
    """One stratum per class, or per target quintile for regression (missing: its own)."""
    if task == CLASSIFICATION:
        keys = ["" if v is None else str(v) for v in values]
        _, codes = np.unique(np.array(keys, dtype=object), return_inverse=True)
        return np.asarray(codes)
    nums = np.array([float(v) if v is not None else np.nan for v in values])
    present = nums[~np.isnan(nums)]
    edges = (np.unique(np.quantile(present, [0.2, 0.4, 0.6, 0.8])) if present.size
             else np.empty(0))
    codes = np.searchsorted(edges, nums, side="right")
    return np.where(np.isnan(nums), len(edges) + 1, codes)


def split_rows(strata: np.ndarray, test_size: float, seed: int) -> np.ndarray:
    """A boolean test mask: within each stratum a seeded shuffle, ``test_size`` of it to test."""
    rng = np.random.default_rng(seed)
    test = np.zeros(len(strata), dtype=bool)
    for s in np.unique(strata):
        idx = np.flatnonzero(strata == s)
        rng.shuffle(idx)
        n_test = int(math.floor(len(idx) * test_size + 0.5))
        if len(idx) >= 2:
            n_test = min(max(n_test, 1), len(idx) - 1)
        test[idx[:n_test]] = True
    return test


def write_split(source: DataFile, target: str, task: str, test_size: float,
                seed: int) -> Split:
    """Split ``source`` into <stem>.train / <stem>.test beside it, keeping every row's text."""
    import pyarrow as pa

    batches = list(iter_batches(source, [target]))
    values = [v for b in batches for v in b.column(0).to_pylist()]
    test_mask = split_rows(_strata(values, task), test_size, seed)
    train_path, test_path = _split_paths(source.path)
    if source.format == "parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(source.path)
        for dest, mask in ((train_path, ~test_mask), (test_path, test_mask)):
            sink = pa.BufferOutputStream()
            pq.write_table(table.filter(pa.array(mask)), sink)
            atomic_write_bytes(dest, sink.getvalue().to_pybytes())
    else:
        _write_csv_split(source, test_mask, train_path, test_path)
    n_test = int(test_mask.sum())
    return Split(train_path, test_path, (len(test_mask) - n_test, n_test),
                 "class" if task == CLASSIFICATION else "target quintile")


def _write_csv_split(source: DataFile, test_mask: np.ndarray, train_path: Path,
                     test_path: Path) -> None:
    import io

    outs = {False: io.StringIO(newline=""), True: io.StringIO(newline="")}
    writers = {k: csv.writer(v, delimiter=source.delimiter, lineterminator="\n")
               for k, v in outs.items()}
    with open(source.path, newline="", encoding=source.encoding) as fh:
        reader = csv.reader(fh, delimiter=source.delimiter)
        header = next(reader)
        for w in writers.values():
            w.writerow(header)
        i = 0
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue  # blank lines: the reader skipped them too
            writers[bool(test_mask[i])].writerow(row)
            i += 1
    atomic_write_text(train_path, outs[False].getvalue())
    atomic_write_text(test_path, outs[True].getvalue())


def project_schema(path: Path, target: str) -> DataSchema:
    source = open_data(path, "data.train")
    profiles, rows, _ = profile_batches(iter_batches(source), list(source.columns))
    return infer_schema(profiles, rows, target=target)


def _policy(task: str, has_reqs: bool) -> str:
    scans = f"[code{', deps' if has_reqs else ''}, model]"
    if task == CLASSIFICATION:
        return f"""policy:
  staging:
    metrics:
      accuracy: {{min: 0.8}}
    regression:
      accuracy: {{tolerance: 0.02}}  # vs the model now in staging (higher is better)
    findings: {{critical: 0, high: 0}}
    scanners: {{deps: {{medium: 0}}}}   # a known advisory on a pin blocks (waive it to accept)
    required_scans: {scans}
  production:
    metrics:
      accuracy: {{min: 0.9}}
    findings: {{critical: 0, high: 0, medium: 0}}
    required_scans: {scans}
"""
    return f"""policy:
  staging:
    metrics:
      r2: {{min: 0.5}}               # share of the target's variance explained
    regression:
      rmse: {{tolerance: 0.05, relative: true}}  # at most 5% worse than staging's (lower is better)
    findings: {{critical: 0, high: 0}}
    scanners: {{deps: {{medium: 0}}}}   # a known advisory on a pin blocks (waive it to accept)
    required_scans: {scans}
  production:
    metrics:
      r2: {{min: 0.7}}
    findings: {{critical: 0, high: 0, medium: 0}}
    required_scans: {scans}
"""


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


def render_config(root: Path, train: Path, test: Path, target: str, schema: DataSchema,
                  split_note: str = "", advisory: AdvisorySource | None = None) -> str:
    rel = lambda p: p.relative_to(root).as_posix()  # noqa: E731
    code_paths = [d for d in ("src",) if (root / d).is_dir()] or ["."]
    has_reqs = (root / "requirements.txt").is_file()
    kinds: dict[str, int] = {}
    for c in schema.features:
        kinds[c.kind] = kinds.get(c.kind, 0) + 1
    summary = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
    ids = "".join(f"\n  #   {c.name}: {c.reason}" for c in schema.identifiers)
    id_note = (f"\n  # identifier-like columns, kept out of the features (list the ones to keep "
               f"in data.features,\n  # or set id_columns: [] to keep them all):{ids}") if ids else ""
    return f"""\
# ci-ml configuration, written by `ci-ml init`. Paths are relative to this file.
# Every key is checked against ci-ml's schema before anything runs.
version: 1
project:
  name: {root.resolve().name.replace(' ', '-') or 'model'}

data:
  train: {rel(train)}{split_note}
  test: {rel(test)}
  target: {target}               # the column to predict
  task: {schema.task:<22} # inferred from the target: classification | regression
  # features: [a, b, c]          # default: every column but the target and identifiers
  #                              # ({len(schema.features)} here: {summary}){id_note}
  normalize: standard            # z-score numbers with the training split's mean/std (kept with the model)

model:
  name: mlp                      # built-in: mlp, cnn; or your own 'package.module:factory'
  params:
    hidden: [64, 32]

train:
  epochs: 30
  batch_size: 32
  learning_rate: 0.003
  seed: 0                        # same inputs + seed -> same weights
  # command: [python, train.py]  # or train with your own script (it leaves model.onnx)

prune:
  # A small MLP on tabular data runs in microseconds: pruning it measured no real speedup
  # (1.2x at batch 1 on the Palmer penguins). The model is exported to ONNX either way.
  enabled: false
  max_accuracy_drop: 1.0         # percentage points a pruned model may lose

scan:
  code:
    paths: {code_paths}
  deps:
    enabled: {str(has_reqs).lower()}
    requirements: [requirements.txt]
{_deps_block(advisory)}  model: {{}}

registry:
  # Every promotion and rollback is a signed event: the history fails verification if
  # one is unsigned, altered or missing. The private key is git-ignored: store it as the
  # CI secret CI_ML_SIGNING_KEY and keep it off shared machines. Commit the public key.
  signing: required
  signing_key: {SIGNING_KEY}
  verify_key: {VERIFY_KEY}

{_policy(schema.task, has_reqs)}"""


def init_project(directory: Path, *, target: str | None = None, force: bool = False,
                 ask: AskFn | None = None, confirm: ConfirmFn | None = None,
                 test_size: float = 0.2, seed: int = 0, say: Callable[[str], None] | None = None,
                 advisory: AdvisorySource | None = None) -> Path:
    root = directory.resolve()
    if not root.is_dir():
        raise UsageError(f"{directory}: not a directory")
    dest = root / "ci-ml.yaml"
    if dest.exists() and not force:
        raise UsageError(f"{dest} already exists (use --force to overwrite)")
    if not 0 < test_size < 1:
        raise UsageError(f"--test-size {test_size}: expected a fraction between 0 and 1")
    files = find_data(root)
    pair = pick_splits(files, root)
    split_note = ""
    if pair is None:
        if len(files) != 1:
            names = ", ".join(str(p.relative_to(root)) for p in files) or "none"
            raise InputError(
                f"{root}: ci-ml needs a training and a test file (names containing 'train' and "
                f"'test'), or a single data file to split; found: {names}")
        source = open_data(files[0], "data")
        columns = list(source.columns)
        target = _choose_target(columns, target, ask, files[0])
        task = project_schema(files[0], target).task
        train_path, test_path = _split_paths(files[0])
        question = (f"{files[0].relative_to(root)} is the only data file: split it "
                    f"{1 - test_size:.0%}/{test_size:.0%} (seed {seed}, stratified) into "
                    f"{train_path.name} and {test_path.name}?")
        if confirm is not None and not confirm(question):
            raise UsageError("no train/test split: split the data yourself (file names with "
                             "'train' and 'test') and run `ci-ml init` again")
        split = write_split(source, target, task, test_size, seed)
        created: tuple[Path, ...] = (split.train, split.test)
        if say:
            say(f"split {files[0].relative_to(root)}: {split.rows[0]} train and {split.rows[1]} "
                f"test rows (seed {seed}, stratified by {split.stratified_by})")
        train, test = split.train, split.test
        split_note = (f"          # {split.rows[0]} rows; `ci-ml init` split "
                      f"{files[0].relative_to(root).as_posix()} (seed {seed}, stratified)")
    else:
        created = ()
        train, test = pair
        target = _choose_target(read_header(train), target, ask, train)
    try:
        schema = project_schema(train, target)
        text = render_config(root, train, test, target, schema, split_note, advisory)
        validate(yaml.safe_load(text), dest)
    except BaseException:
        for path in created:  # nothing half-written: the split goes with the config
            path.unlink(missing_ok=True)
        raise
    ensure_signing_keys(root)
    atomic_write_text(dest, text)
    return dest


def _choose_target(columns: list[str], target: str | None, ask: AskFn | None,
                   path: Path) -> str:
    if target is None:
        guess = guess_target(columns)
        target = ask(columns, guess) if ask else guess
    if target not in columns:
        raise InputError(f"{path}: no column {target!r}; columns are: {', '.join(columns[:10])}")
    return target


def ensure_signing_keys(root: Path) -> str:
    """Make the project's signing key pair unless it exists; returns the key id."""
    private, public = root / SIGNING_KEY, root / VERIFY_KEY
    (root / KEY_DIR).mkdir(parents=True, exist_ok=True)
    ignore = root / KEY_DIR / ".gitignore"
    if not ignore.is_file():
        atomic_write_text(ignore, KEY_GITIGNORE)
    if not private.exists():
        return generate_keypair(private)[1]
    signer = load_private_key(private)   # re-init: keep the key, restore its public half
    if not public.exists():
        atomic_write_text(public, signer.public_pem().decode("ascii"))
    elif public.read_bytes().strip() != signer.public_pem().strip():
        raise UsageError(f"{public}: not the public key of {private}; remove one of them "
                         "(or both, for a new key pair)")
    return signer.keyid
