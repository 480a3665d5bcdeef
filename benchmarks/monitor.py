"""Monitoring benchmark: `ci-ml monitor` on a million logged requests, in bounded memory,
against Evidently's data drift preset on the same log, in the same run.

    python benchmarks/monitor.py [--rows 1000000] [--evidently-python PATH]

The log holds rows of the example's test split (sklearn's digits, 64 features), resampled
with a seed, in the server's request-log format (docs/serve.md), one request per line; the
outputs are the rows' true labels. The reference is the example's training split. Each
tool runs in its own process, on the same file, one after the other:

1. ci-ml: `ci-ml monitor` (streaming: per-feature KS, PSI, chi-square of the predictions,
   Holm correction) at 1/10 of the rows and at all of them: rows/s, CPU, peak RSS. Bounded
   memory means the peak RSS does not grow with the rows (target: the full run's peak
   within 10 % + 20 MB of the tenth's).
2. Evidently (`Report([DataDriftPreset()])`, from PyPI, in its own virtual environment
   under .bench-venvs/ since it needs pandas < 3): the same log parsed into a DataFrame,
   then the preset; rows/s with and without the parsing, peak RSS.

Prints a table and the ratio of rows/s (ci-ml over Evidently, parsing included on both
sides: both start from the log file). Exits 1 when the memory target is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "fixtures" / "example"
VENV = REPO / ".bench-venvs" / "evidently"


def write_log(path: Path, rows: int, seed: int = 0) -> None:
    data = np.loadtxt(EXAMPLE / "data" / "test.csv", delimiter=",", skiprows=1, dtype=int)
    x, y = data[:, :-1], data[:, -1]
    rng = np.random.default_rng(seed)
    index = rng.integers(0, len(y), rows)
    now = time.time()
    with open(path, "w", encoding="utf-8") as fh:
        for n, i in enumerate(index):
            ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now - (rows - n) * 0.01))
            row = ",".join(map(str, x[i]))
            fh.write(f'{{"id":"r{n}","ts":"{ts}.000Z","model_digest":"{"0" * 64}",'
                     f'"model_version":null,"route":"/predict","status":200,'
                     f'"latency_ms":{0.5 + rng.random():.3f},"inputs":[[{row}]],'
                     f'"outputs":[{{"label":"{y[i]}"}}]}}\n')


def config(work: Path) -> Path:
    path = work / "ci-ml.yaml"
    path.write_text(f"data:\n  train: {EXAMPLE / 'data' / 'train.csv'}\n  test: "
                    f"{EXAMPLE / 'data' / 'test.csv'}\n  target: label\n  scale: 16.0\n"
                    "model:\n  name: cnn\n  input_shape: [1, 8, 8]\n")
    return path


def run_child(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float, float,
                                                                            str]:
    """Wall s, CPU s (user+sys) and peak RSS MB of one child process; its stdout."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode not in (0, 1):
        sys.exit(f"{cmd[0]} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    # ru_maxrss of RUSAGE_CHILDREN is the largest child so far: run the small case first.
    return wall, cpu, after.ru_maxrss / 1024, proc.stdout


def ci_ml(work: Path, log: Path, out: str) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "ci_ml", "monitor", "--config", str(config(work)), "--log",
           str(log), "--out", str(work / out), "--window", "3650d", "--no-html", "-q"]
    wall, cpu, rss, _ = run_child(cmd, env)
    doc = json.loads((work / out / "monitor-report.json").read_text())
    return {"rows": doc["window"]["rows"], "wall": wall, "cpu": cpu, "rss": rss,
            "drifted": len(doc["drift"]["drifted"])}


def evidently_python(explicit: str | None) -> str:
    if explicit:
        return explicit
    python = VENV / "bin" / "python"
    if not python.exists():
        print(f"creating {VENV} with Evidently (once) ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "evidently",
                        "pandas<3"], check=True)
    return str(python)


def evidently(python: str, log: Path) -> dict[str, float]:
    cmd = [python, str(REPO / "benchmarks" / "evidently_drift.py"), str(log),
           str(EXAMPLE / "data" / "train.csv"), "label"]
    wall, cpu, rss, stdout = run_child(cmd)
    doc = json.loads(stdout.strip().splitlines()[-1])
    return {"rows": doc["rows"], "wall": wall, "cpu": cpu, "rss": rss,
            "drift_s": doc["drift_s"], "load_s": doc["load_s"],
            "drifted": doc["drifted_columns"], "version": doc["evidently"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--evidently-python", default=None)
    ap.add_argument("--skip-evidently", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="ci-ml-bench-monitor-") as tmp:
        work = Path(tmp)
        small, full = work / "small.jsonl", work / "full.jsonl"
        write_log(small, args.rows // 10, seed=1)
        write_log(full, args.rows, seed=2)
        size = full.stat().st_size / 1e6
        print(f"log: {args.rows:,} requests, {size:.0f} MB; reference: 1,437 rows x 64 features")
        a = ci_ml(work, small, "small")
        b = ci_ml(work, full, "full")
        for r in (a, b):
            print(f"ci-ml monitor   {r['rows']:>9,} rows: {r['rows'] / r['wall']:>9,.0f} rows/s "
                  f"wall, {r['rows'] / r['cpu']:>9,.0f} rows/s CPU ({r['cpu']:.1f} s), "
                  f"peak RSS {r['rss']:.0f} MB; drifted features: {r['drifted']}")
        bounded = b["rss"] <= a["rss"] * 1.10 + 20
        print(f"memory: peak RSS {b['rss']:.0f} MB at {b['rows']:,} rows vs {a['rss']:.0f} MB at "
              f"{a['rows']:,}: {'bounded' if bounded else 'GROWS'}")
        if not args.skip_evidently:
            e = evidently(evidently_python(args.evidently_python), full)
            print(f"Evidently {e['version']} DataDriftPreset {e['rows']:>9,} rows: "
                  f"{e['rows'] / e['wall']:>9,.0f} rows/s wall, {e['rows'] / e['cpu']:>9,.0f} "
                  f"rows/s CPU ({e['cpu']:.1f} s; parsing {e['load_s']:.1f} s, preset "
                  f"{e['drift_s']:.1f} s wall), peak RSS {e['rss']:.0f} MB; drifted columns: "
                  f"{e['drifted']}")
            print(f"ratio ci-ml / Evidently, rows/s from the log file: wall "
                  f"{(b['rows'] / b['wall']) / (e['rows'] / e['wall']):.2f}, CPU "
                  f"{(b['rows'] / b['cpu']) / (e['rows'] / e['cpu']):.2f}; peak RSS "
                  f"{b['rss'] / e['rss']:.2f}")
        sys.exit(0 if bounded else 1)


if __name__ == "__main__":
    main()
