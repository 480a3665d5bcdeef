"""`ci-ml data check` on a generated CSV of at least 1 GB: peak memory and rows/s, side by side
with pandas `read_csv` plus the same statistics, in the same run.

Target: ci-ml's peak RSS under 500 MB (it streams: 1 MiB blocks read at most two 8 MiB
batches ahead, bounded per-column profiles, row hashes spilled to disk past 1M rows;
docs/data.md); rows/s are reported next to pandas', which holds the whole table in
memory.

The data are generated (a benchmark needs a size no public set has on this machine):
an integer id (unique: an identifier ci-ml must find and leave out), six numeric
columns (normal, log-normal, integers; 2% missing), three categorical ones (4 to 40
categories; 1% missing), an ISO date and a class target. The test split is a tenth of
the training split's size, drawn from the same generator with a shift in one column.
Both tools compute: per column missing shares, min/max/mean/std and deciles
(numbers), category counts (categories), PSI of every numeric column and a chi-square
test of every categorical one between train and test, duplicate rows in train and
train/test overlap by row hash. Each side runs in its own process, measured with
wait4's ru_maxrss (peak RSS) and wall time; the order alternates over rounds.

Usage: python benchmarks/data_check.py [--gb 1.0] [--rounds 1] [--keep DIR]
(exit 1 if ci-ml's peak RSS is 500 MB or more)
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TARGET_MB = 500.0
CONFIG = """\
data: {train: train.csv, test: test.csv, target: label}
model: {name: mlp}
cache: {enabled: false}
"""

PANDAS_SIDE = r'''
import sys, numpy as np, pandas as pd
from scipy.stats import chi2_contingency
train = pd.read_csv(sys.argv[1]); test = pd.read_csv(sys.argv[2])
num = pd.api.types.is_numeric_dtype  # pandas 3 reads strings as its own dtype, not object
numbers = [c for c in train.columns if c not in ("id", "label", "date") and num(train[c])]
cats = [c for c in train.columns if not num(train[c]) and c != "date"]
out = {}
for df in (train, test):
    out["missing"] = df.isna().mean().to_dict()
    d = df[numbers].describe(percentiles=[i / 10 for i in range(1, 10)])
    for c in cats:
        df[c].value_counts(dropna=True)
def psi(e, a):
    edges = np.unique(np.nanquantile(e, np.linspace(0, 1, 11)))
    edges[0], edges[-1] = -np.inf, np.inf
    ee = np.histogram(e[~np.isnan(e)], edges)[0] / np.sum(~np.isnan(e))
    aa = np.histogram(a[~np.isnan(a)], edges)[0] / np.sum(~np.isnan(a))
    ee, aa = np.clip(ee, 1e-4, None), np.clip(aa, 1e-4, None)
    return float(np.sum((aa - ee) * np.log(aa / ee)))
for c in numbers:
    psi(train[c].to_numpy(float), test[c].to_numpy(float))
for c in cats:
    t = pd.concat([train[c].value_counts(), test[c].value_counts()], axis=1).fillna(0)
    chi2_contingency(t.to_numpy().T)
cols = [c for c in train.columns if c != "id"]
h_train = pd.util.hash_pandas_object(train[cols], index=False).to_numpy()
h_test = pd.util.hash_pandas_object(test[cols], index=False).to_numpy()
dup = int(pd.Series(h_train).duplicated().sum())
overlap = int(np.isin(h_test, h_train).sum())
print(len(train) + len(test), dup, overlap)
'''


def generate(path: Path, rows: int, seed: int, shift: float = 0.0) -> None:
    """Write ``rows`` rows in chunks with pyarrow's CSV writer (the generator's memory is
    one chunk). The string columns are drawn once and shuffled per chunk (drawing them is
    the slow part); the numbers are drawn fresh for every chunk."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    rng = np.random.default_rng(seed)
    chunk = 500_000
    cats_a = np.array(["red", "green", "blue", "amber"])
    cats_b = np.array([f"store-{i:02d}" for i in range(40)])
    cats_c = np.array(["online", "retail", "wholesale", "partner", "internal", "other"])

    def gaps(values: np.ndarray, share: float) -> pa.Array:
        return pa.array(values, mask=rng.random(len(values)) < share)

    strings = {
        "colour": gaps(cats_a[rng.integers(0, 4, chunk)], 0.01),
        "store": gaps(cats_b[rng.integers(0, 40, chunk)], 0.01),
        "channel": gaps(cats_c[rng.integers(0, 6, chunk)], 0.01),
        "date": pa.array((np.datetime64("2024-01-01") + rng.integers(0, 700, chunk)).astype(str)),
    }
    schema = pa.schema([
        ("id", pa.int64()), ("x1", pa.float64()), ("x2", pa.float64()), ("x3", pa.float64()),
        ("x4", pa.float64()), ("n1", pa.int64()), ("n2", pa.int64()), ("colour", pa.string()),
        ("store", pa.string()), ("channel", pa.string()), ("date", pa.string()),
        ("label", pa.string())])
    with pcsv.CSVWriter(path, schema) as writer:
        start = seed * 10**9
        for begin in range(0, rows, chunk):
            n = min(chunk, rows - begin)
            pick = pa.array(rng.permutation(chunk)[:n])
            x1 = rng.normal(shift, 1.0, n)
            cols = {
                "id": pa.array(np.arange(start + begin, start + begin + n)),
                "x1": gaps(np.round(x1, 4), 0.02),
                "x2": gaps(np.round(rng.lognormal(3, 1, n), 3), 0.02),
                "x3": gaps(np.round(rng.uniform(-5, 5, n), 4), 0.02),
                "x4": gaps(np.round(rng.normal(100, 15, n), 2), 0.02),
                "n1": gaps(rng.integers(0, 1000, n), 0.02),
                "n2": gaps(rng.poisson(3, n), 0.02),
                **{k: v.take(pick) for k, v in strings.items()},
                "label": pa.array(np.where(x1 + rng.normal(0, 1, n) > 0, "yes", "no")),
            }
            writer.write(pa.RecordBatch.from_pydict(cols, schema=schema))


def run_child(argv: list[str], cwd: Path) -> tuple[float, float, int, str]:
    """Fork a watcher so ru_maxrss belongs to this one child, not to every child so far."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the watcher: runs the command, reports its own children's peak
        os.close(r)
        import resource

        started = time.perf_counter()
        proc = subprocess.run(argv, cwd=cwd, capture_output=True, check=False,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
        wall = time.perf_counter() - started
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        msg = f"{wall}\n{peak}\n{proc.returncode}\n{proc.stdout.decode()}\n\x00{proc.stderr.decode()}"
        os.write(w, msg.encode())
        os._exit(0)
    os.close(w)
    chunks = []
    while data := os.read(r, 1 << 16):
        chunks.append(data)
    os.waitpid(pid, 0)
    text = b"".join(chunks).decode()
    head, _, err = text.partition("\x00")
    wall_s, peak_s, code_s, out = head.split("\n", 3)
    code = int(code_s)
    if code not in (0, 1):
        sys.exit(f"{' '.join(argv[:4])} failed ({code}): {err[-2000:]}")
    return float(wall_s), float(peak_s), code, out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=float, default=1.0, help="size of the training CSV")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--keep", type=Path, default=None, help="reuse/keep the data here")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="ci-ml-bench-data-"))
    work.mkdir(parents=True, exist_ok=True)
    train, test = work / "train.csv", work / "test.csv"
    if not train.is_file() or train.stat().st_size < args.gb * 1e9:
        rows = int(args.gb * 1e9 / 100)  # about 100 bytes a row
        print(f"generating {rows:,} training rows ...", flush=True)
        generate(train, rows, seed=1)
        while train.stat().st_size < args.gb * 1e9:
            # Scale by the bytes a row took, once (a rewrite of 1 GB takes minutes).
            rows = int(rows * args.gb * 1e9 / train.stat().st_size * 1.01) + 1
            print(f"{train.stat().st_size / 1e9:.2f} GB: {rows:,} rows instead ...", flush=True)
            generate(train, rows, seed=1)
        generate(test, rows // 10, seed=2, shift=0.3)
    (work / "ci-ml.yaml").write_text(CONFIG)
    (work / "pandas_side.py").write_text(PANDAS_SIDE)
    size = train.stat().st_size + test.stat().st_size
    print(f"train.csv {train.stat().st_size / 1e9:.2f} GB, test.csv "
          f"{test.stat().st_size / 1e9:.2f} GB", flush=True)
    ours, theirs = [], []
    for i in range(args.rounds):
        order = ("ci-ml", "pandas") if i % 2 == 0 else ("pandas", "ci-ml")
        for who in order:
            if who == "ci-ml":
                shutil.rmtree(work / "out", ignore_errors=True)
                wall, rss, code, _ = run_child(
                    [sys.executable, "-m", "ci_ml", "data", "check", "-q", "--out", "out"], work)
                ours.append((wall, rss))
            else:
                wall, rss, code, out = run_child(
                    [sys.executable, "pandas_side.py", str(train), str(test)], work)
                theirs.append((wall, rss))
                rows_total = int(out.split()[0])
            print(f"round {i + 1} {who}: {wall:.1f} s, peak RSS {rss:.0f} MB", flush=True)
    import json

    report = json.loads((work / "out" / "data-report.json").read_text())
    rows_total = report["rows"]["train"] + report["rows"]["test"]
    best_ours = min(w for w, _ in ours)
    best_theirs = min(w for w, _ in theirs)
    peak_ours = max(r for _, r in ours)
    peak_theirs = max(r for _, r in theirs)
    print(f"\n{rows_total:,} rows, {size / 1e9:.2f} GB; identifiers found: "
          f"{', '.join(report['identifiers']) or 'none'}; checks failed: "
          f"{', '.join(c['name'] for c in report['checks'] if not c['passed']) or 'none'}")
    print(f"ci-ml data check: {rows_total / best_ours:,.0f} rows/s ({best_ours:.1f} s), "
          f"peak RSS {peak_ours:.0f} MB")
    print(f"pandas read_csv + same statistics: {rows_total / best_theirs:,.0f} rows/s "
          f"({best_theirs:.1f} s), peak RSS {peak_theirs:.0f} MB")
    print(f"ratio ci-ml / pandas: speed {best_theirs / best_ours:.2f}x, memory "
          f"{peak_ours / peak_theirs:.2f}x; target: peak RSS < {TARGET_MB:.0f} MB: "
          f"{'met' if peak_ours < TARGET_MB else 'MISSED'}")
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if peak_ours < TARGET_MB else 1


if __name__ == "__main__":
    sys.exit(main())
