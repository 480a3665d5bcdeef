"""autofix against blind retry x2 and double-the-memory-and-retry, on a replayed workload.

The workload is made here, of real step runs on the bundled example (sklearn's digits,
`fixtures/example/`), each through ci-ml's own runner and limits:

- resource: the train step (a wide MLP, one epoch, 400 or 800 rows) with a batch size,
  a memory limit and a timeout drawn at random: some limits are too small for the batch
  size (out of memory), some timeouts too short;
- code: a model factory with a bug that only shows in training (a traceback);
- data: a training CSV with corrupted rows (values past float32's range: the loss
  diverges, ci-ml exits 2);
- transient: the dependency scan against an OSV service that answers 503 or drops the
  connection for one or two runs, then recovers.

Runs are ordered by their start (their "time"); the first 60% are the history, the
rest the evaluation. For each failed evaluation run, each strategy retries:

- blind: the same configuration, up to 2 times (what `retry: 2` in CI does);
- double-memory: once, with twice the memory limit;
- autofix: as `ci-ml autofix` recommends (at most 2), its model fitted on everything
  that happened before the run (history, earlier evaluation runs, its own retries).

A retry with a configuration the workload already ran for the same scenario replays
one of those measured runs (this is what "replayed" means); any other configuration,
and every transient retry (the service's state matters), runs for real. Cost is
compute: minutes x (price per minute + price per GiB-minute x memory limit), at the
config's default prices.

    python benchmarks/autofix.py [--runs 220] [--jobs 2] [--seed 0] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import contextvars
import http.server
import json
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ci_ml.autofix.interface import RunRecord, Settings  # noqa: E402
from ci_ml.autofix.knobs import apply  # noqa: E402
from ci_ml.autofix.record import Attempt, attempt, open_history  # noqa: E402
from ci_ml.autofix.remediate import recommend  # noqa: E402
from ci_ml.config import Config, apply_defaults, config_schema, load_config, validate  # noqa: E402
from ci_ml.console import Reporter  # noqa: E402
from ci_ml.errors import CiMlError  # noqa: E402
from ci_ml.pipeline.runner import run_pipeline  # noqa: E402

HIDDEN = [32768]          # wide and shallow: memory grows with the batch, compute stays small
ROWS = (400, 800)
BATCHES = (64, 256, 800)
MEMORY_MB = (320, 352, 384, 416, 480, 640, 768)
TIMEOUTS_S = (8.0, 40.0, 240.0, 240.0, 240.0)
KINDS = (("resource", 0.6), ("code", 0.1), ("data", 0.1), ("transient", 0.2))
RESOURCE_CLASSES = ("out-of-memory", "timeout", "resource-exhausted")
BUGGY = REPO / "fixtures" / "autofix" / "buggy.py"


@dataclass(frozen=True)
class Item:
    index: int
    kind: str
    rows: int
    batch: int
    settings: Settings
    transient_failures: int = 0
    drop_connection: bool = False

    @property
    def step(self) -> str:
        return "scan-deps" if self.kind == "transient" else "train"

    @property
    def scenario(self) -> tuple[Any, ...]:
        return (self.kind, self.rows, self.batch)


@dataclass
class Outcome:
    record: RunRecord
    replayed: bool = False


class FlakyOSV:
    """An OSV /v1/query service on loopback: no vulnerabilities, unless told to fail."""

    def __init__(self) -> None:
        self.failing = False
        self.drop = False
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                if outer.failing and outer.drop:
                    self.close_connection = True
                    self.connection.close()
                    return
                body = b'{"message": "unavailable"}' if outer.failing else b"{}"
                self.send_response(503 if outer.failing else 200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/query"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


class Bench:
    def __init__(self, root: Path, seed: int, fresh: bool = True) -> None:
        self.root = root
        self.rng = random.Random(seed)
        self.project = root / "example"
        if fresh:
            self._make_project()
        self.base = load_config(self.project / "ci-ml.yaml")
        self.history_dir = root / "history"
        os.environ["CI_ML_HISTORY"] = str(self.history_dir)
        self.osv = FlakyOSV()
        os.environ.pop("CI_ML_ADVISORIES", None)
        os.environ["PIP_AUDIT_VULNERABILITY_SERVICE"] = "osv"
        os.environ["PIP_AUDIT_OSV_URL"] = self.osv.url
        self.transient_lock = threading.Lock()
        self.memo: dict[tuple[Any, ...], list[RunRecord]] = {}
        self.memo_lock = threading.Lock()
        self.real_runs = 0

    def _make_project(self) -> None:
        shutil.copytree(REPO / "fixtures" / "example", self.project,
                        ignore=shutil.ignore_patterns(".ci-ml-cache", "out"))
        data = self.project / "data"
        lines = (data / "train.csv").read_text().splitlines()
        for n in ROWS:
            (data / f"train-{n}.csv").write_text("\n".join(lines[: n + 1]) + "\n")
        bad = lines[: ROWS[0] + 1]
        for i in range(5, len(bad), 80):   # a broken export: values past float32's range
            cells = bad[i].split(",")
            bad[i] = ",".join(["1e300"] * (len(cells) - 1) + [cells[-1]])
        (data / "train-corrupt.csv").write_text("\n".join(bad) + "\n")
        test = (data / "test.csv").read_text().splitlines()
        (data / "test-small.csv").write_text("\n".join(test[:181]) + "\n")
        shutil.copy(BUGGY, self.project / "buggy.py")

    # -- the workload -----------------------------------------------------------------------
    def items(self, n: int) -> list[Item]:
        out = []
        kinds, weights = zip(*KINDS, strict=True)
        for i in range(n):
            kind = self.rng.choices(kinds, weights)[0]
            rows, batch = self.rng.choice(ROWS), self.rng.choice(BATCHES)
            memory = self.rng.choice(MEMORY_MB)
            timeout = self.rng.choice(TIMEOUTS_S)
            if kind in ("code", "data", "transient"):
                memory, timeout = 1024, 300.0
            settings = Settings(memory_mb=memory, timeout_s=timeout)
            if kind != "transient":
                settings = settings.with_(batch_size=batch, accumulation_steps=1, threads=1,
                                          nproc=1)
            out.append(Item(i, kind, rows, batch, settings,
                            self.rng.choice((1, 1, 2)) if kind == "transient" else 0,
                            self.rng.random() < 0.5))
        return out

    def config(self, item: Item, settings: Settings) -> Config:
        d = json.loads(json.dumps(self.base.data))
        d["data"]["train"] = ("data/train-corrupt.csv" if item.kind == "data"
                              else f"data/train-{item.rows}.csv")
        d["data"]["test"] = "data/test-small.csv"
        d["model"] = ({"name": "buggy:factory"} if item.kind == "code" else
                      {"name": "mlp", "params": {"hidden": HIDDEN}})
        d["train"].update(epochs=1, batch_size=item.batch, validation_fraction=0.1)
        d["scan"]["deps"].update(advisories=None, service="osv")   # PIP_AUDIT_OSV_URL: the flaky one
        d["cache"] = {"enabled": False}
        d["autofix"] = {"backoff_s": 0.5, "max_backoff_s": 2}
        validate(d, self.base.path)
        config = replace(self.base, data=apply_defaults(d, config_schema()))
        return apply(config, item.step, settings)

    def run(self, item: Item, settings: Settings, run_id: str, number: int = 0,
            failing: bool = False) -> RunRecord:
        """One real run of the item's step; its record from the history."""
        config = self.config(item, settings)
        out = self.root / "out" / run_id
        lock = self.transient_lock if item.kind == "transient" else contextlib.nullcontext()
        with lock, attempt(Attempt(run_id, number)):
            self.osv.failing, self.osv.drop = failing, item.drop_connection
            try:
                run_pipeline(config, out, only=[item.step], force=True,
                             reporter=Reporter(quiet=True))
            except CiMlError:
                pass
        shutil.rmtree(out, ignore_errors=True)
        records = [r for r in open_history(config).records()
                   if r.run_id == run_id and r.attempt == number and r.step == item.step]
        if not records:
            raise SystemExit(f"run {run_id}: no history record (did the preflight fail?)")
        self.real_runs += 1
        return records[-1]

    def original(self, item: Item) -> RunRecord:
        record = self.run(item, item.settings, f"w{item.index}", 0,
                          failing=item.transient_failures > 0)
        self.remember(item, record)
        return record

    def remember(self, item: Item, record: RunRecord) -> None:
        if item.kind != "transient":
            with self.memo_lock:
                self.memo.setdefault((*item.scenario, record.settings), []).append(record)

    def retry(self, item: Item, settings: Settings, strategy: str, number: int) -> Outcome:
        """The outcome of the item's ``number``-th retry with ``settings``."""
        key = (*item.scenario, settings)
        if item.kind != "transient" and self.memo.get(key):
            return Outcome(self.rng.choice(self.memo[key]), replayed=True)
        record = self.run(item, settings, f"e{item.index}-{strategy}", number,
                          failing=number < item.transient_failures)
        self.remember(item, record)
        return Outcome(record)


@dataclass
class Tally:
    resource_failures: int = 0
    fixed_first: int = 0
    fixed_eventually: int = 0
    deterministic_retries: int = 0
    retries: int = 0
    failed_cost: float = 0.0     # failed runs: the originals and every failed retry
    retry_cost: float = 0.0      # every retry, failed or not
    replayed: int = 0
    predictions: list[tuple[float, bool]] = field(default_factory=list)
    by_class: dict[str, list[int]] = field(default_factory=dict)   # class -> [failed, fixed 1st]
    misses: list[str] = field(default_factory=list)


def cost(record: RunRecord, prices: dict[str, float]) -> float:
    memory_gb = (record.settings.memory_mb or 0) / 1024
    return record.usage.wall_s / 60 * (prices["price_per_minute"]
                                       + prices["price_per_gb_minute"] * memory_gb)


def evaluate(bench: Bench, items: list[Item], records: list[RunRecord], split: int,
             progress: Callable[[str], None]) -> dict[str, Tally]:
    prices = dict(bench.base.section("autofix"))
    tallies = {name: Tally() for name in ("blind retry x2", "double memory", "autofix")}
    known: list[RunRecord] = list(records[:split])
    for item, record in zip(items[split:], records[split:], strict=True):
        known.append(record)
        if record.ok:
            continue
        truth_resource = record.failure is not None and \
            record.failure.failure_class.value in RESOURCE_CLASSES
        deterministic = item.kind in ("code", "data")
        klass = record.failure.failure_class.value if record.failure else "unknown"
        for name, tally in tallies.items():
            tally.failed_cost += cost(record, prices)
            tally.resource_failures += truth_resource
            tally.by_class.setdefault(klass, [0, 0])[0] += 1
            last = record
            for number in range(2):
                if name == "blind retry x2":
                    choice: Settings | None = record.settings
                    p = None
                elif name == "double memory":
                    if number:
                        break
                    mem = record.settings.memory_mb
                    choice, p = record.settings.with_(memory_mb=mem * 2 if mem else None), None
                else:
                    rec = recommend(bench.config(item, last.settings), last, known)
                    if not rec.retry or rec.chosen is None:
                        if number == 0 and truth_resource:
                            tally.misses.append(f"#{item.index} {klass}: {rec.reason}")
                        break
                    choice, p = rec.chosen.settings, rec.chosen.prediction.p_success
                    time.sleep(rec.backoff_s)   # 0.5 s here: autofix.backoff_s of the workload
                assert choice is not None
                outcome = bench.retry(item, choice, name.split()[0], number + 1)
                tally.retries += 1
                tally.deterministic_retries += deterministic
                tally.replayed += outcome.replayed
                c = cost(outcome.record, prices)
                tally.retry_cost += c
                if name == "autofix":
                    if not outcome.replayed:
                        known.append(outcome.record)
                    tally.predictions.append((p or 0.0, outcome.record.ok))
                    if number == 0 and truth_resource and not outcome.record.ok:
                        how = outcome.record.failure.failure_class.value \
                            if outcome.record.failure else "failed"
                        tally.misses.append(f"#{item.index} {klass}: retried with "
                                            f"{dict(choice.changes_from(record.settings))}, "
                                            f"P {p:.2f}, then {how}")
                if not outcome.record.ok:
                    tally.failed_cost += c
                    last = outcome.record
                    continue
                tally.by_class[klass][1] += number == 0
                if truth_resource:
                    tally.fixed_first += number == 0
                    tally.fixed_eventually += 1
                break
        progress(f"evaluated {item.index + 1}/{len(items)}")
    return tallies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=220, help="workload runs (>= 200)")
    parser.add_argument("--jobs", type=int, default=2, help="workload runs at a time")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--history-share", type=float, default=0.6)
    parser.add_argument("--json", type=Path, default=None, help="write the numbers here")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep the project, history and workload here (default: a temp dir)")
    parser.add_argument("--reuse", action="store_true",
                        help="evaluate the workload saved in --workdir again, without rerunning it")
    args = parser.parse_args()
    if args.reuse and args.workdir is None:
        parser.error("--reuse needs --workdir")
    with contextlib.ExitStack() as stack:
        root = args.workdir or Path(stack.enter_context(
            tempfile.TemporaryDirectory(prefix="ci-ml-autofix-bench-")))
        run(root, args)


def run(root: Path, args: argparse.Namespace) -> None:
    started = time.perf_counter()

    def log(text: str) -> None:
        print(f"[{time.perf_counter() - started:7.1f}s] {text}", file=sys.stderr, flush=True)

    saved = root / "workload.json"
    if args.reuse:
        bench = Bench(root, args.seed, fresh=False)
        data = json.loads(saved.read_text())
        items = [Item(**{**i, "settings": Settings.from_json(i["settings"])})
                 for i in data["items"]]
        records = [RunRecord.from_json(r) for r in data["records"]]
        for item, record in zip(items, records, strict=True):
            bench.remember(item, record)
        workload_runs = 0
    else:
        root.mkdir(parents=True, exist_ok=True)
        bench = Bench(root, args.seed)
        items = bench.items(args.runs)
        done = [0]

        def one(item: Item) -> RunRecord:
            record = bench.original(item)
            done[0] += 1
            if done[0] % 10 == 0:
                log(f"workload {done[0]}/{len(items)}")
            return record

        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            futures = [pool.submit(contextvars.copy_context().run, one, item) for item in items]
            records = [f.result() for f in futures]
        saved.write_text(json.dumps({"items": [asdict(i) for i in items],
                                     "records": [r.to_json() for r in records]}))
        workload_runs = bench.real_runs
    split = int(len(items) * args.history_share)
    tallies = evaluate(bench, items, records, split, lambda t: None)
    report(items, records, split, tallies, workload_runs, bench.real_runs - workload_runs,
           time.perf_counter() - started, args.json)


def report(items: list[Item], records: list[RunRecord], split: int, tallies: dict[str, Tally],
           workload_runs: int, retry_runs: int, seconds: float, json_path: Path | None) -> None:
    evaluation = records[split:]
    classes: dict[str, int] = {}
    for r in evaluation:
        if not r.ok and r.failure is not None:
            classes[r.failure.failure_class.value] = classes.get(r.failure.failure_class.value, 0) + 1
    kinds = {k: sum(1 for i in items if i.kind == k) for k, _ in KINDS}
    print(f"workload: {workload_runs} real step runs ({kinds}); history {split}, evaluation "
          f"{len(evaluation)} ({sum(not r.ok for r in evaluation)} failed: {classes}); "
          f"{retry_runs} retries run for real; {seconds / 60:.1f} min")
    blind = tallies["blind retry x2"]
    rows = []
    for name, t in tallies.items():
        share = t.fixed_first / t.resource_failures if t.resource_failures else 0.0
        eventually = t.fixed_eventually / t.resource_failures if t.resource_failures else 0.0
        saved = 1 - t.failed_cost / blind.failed_cost if blind.failed_cost else 0.0
        rows.append({"strategy": name, "resource_failures": t.resource_failures,
                     "remediated_first_retry": round(share, 3),
                     "remediated_within_2": round(eventually, 3),
                     "deterministic_retries": t.deterministic_retries, "retries": t.retries,
                     "failure_cost": round(t.failed_cost, 5), "retry_cost": round(t.retry_cost, 5),
                     "failure_cost_saved_vs_blind": round(saved, 3), "replayed": t.replayed})
    header = (f"{'strategy':<16}{'fixed 1st':>10}{'fixed <=2':>10}{'det.retries':>12}"
              f"{'retries':>9}{'cost of failures':>18}{'saved vs blind':>16}")
    print(header)
    for row in rows:
        print(f"{row['strategy']:<16}{row['remediated_first_retry']:>10.0%}"
              f"{row['remediated_within_2']:>10.0%}{row['deterministic_retries']:>12}"
              f"{row['retries']:>9}{row['failure_cost']:>18.5f}"
              f"{row['failure_cost_saved_vs_blind']:>16.0%}")
    classes_seen = sorted({k for t in tallies.values() for k in t.by_class})
    print("fixed on the first retry, by class: " + "; ".join(
        f"{name}: " + ", ".join(f"{k} {t.by_class.get(k, [0, 0])[1]}/{t.by_class.get(k, [0, 0])[0]}"
                                for k in classes_seen) for name, t in tallies.items()))
    for miss in tallies["autofix"].misses:
        print(f"  autofix, not fixed: {miss}")
    preds = tallies["autofix"].predictions
    if preds:
        brier = sum((p - ok) ** 2 for p, ok in preds) / len(preds)
        print(f"autofix predictions: {len(preds)} retries, mean P(success) "
              f"{sum(p for p, _ in preds) / len(preds):.2f}, observed "
              f"{sum(ok for _, ok in preds) / len(preds):.2f}, Brier {brier:.3f}")
    print("reference (Netflix): 56% of memory-configuration failures remediated without a "
          "person; 50% of the cost of failures saved")
    if json_path:
        json_path.write_text(json.dumps({"rows": rows, "workload_runs": workload_runs,
                                         "by_class": {n: t.by_class for n, t in tallies.items()},
                                         "misses": tallies["autofix"].misses,
                                         "retry_runs": retry_runs, "classes": classes,
                                         "kinds": kinds, "minutes": seconds / 60}, indent=2))


if __name__ == "__main__":
    main()
