"""ONNX Runtime latency, measured so that a shared, noisy machine cannot skew a comparison.

* one intra-op thread per session (what a CPU model server usually gets per request);
* warm-up calls before timing;
* interleaved rounds: in each round every model runs a block of calls, and the order
  of the models alternates from round to round, so slow phases of the machine hit all
  models alike;
* each round gives a median per model; the result is the median of those medians.

Wall-clock time is the latency. The calling thread's CPU time is recorded too: with one
intra-op thread ONNX Runtime computes on the calling thread, so CPU time is the same
cost minus the time the thread waited for a core. On a loaded machine a call of several
milliseconds is almost always preempted while a call of microseconds rarely is, which
inflates long calls' wall time and therefore ratios between a large and a small model;
decisions in ``ci_ml.model.prune`` require both clocks to agree.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ci_ml.errors import UsageError
from ci_ml.model.export import make_session


@dataclass(frozen=True)
class LatencyStats:
    """Latency of one model at one batch size."""

    batch: int
    median_s: float  # wall clock: median of the per-round medians
    round_medians_s: tuple[float, ...]
    calls_per_round: int
    cpu_median_s: float = 0.0  # calling thread's CPU time, same estimator

    @property
    def cpu_median_us(self) -> float:
        return self.cpu_median_s * 1e6

    @property
    def median_us(self) -> float:
        return self.median_s * 1e6

    @property
    def spread(self) -> float:
        """Interquartile range of the round medians relative to their median."""
        r = sorted(self.round_medians_s)
        if len(r) < 4:
            return 0.0
        q = statistics.quantiles(r, n=4)
        return (q[2] - q[0]) / self.median_s if self.median_s else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "batch": self.batch,
            "median_us": round(self.median_us, 3),
            "cpu_median_us": round(self.cpu_median_us, 3),
            "rounds": len(self.round_medians_s),
            "calls_per_round": self.calls_per_round,
            "iqr_relative": round(self.spread, 4),
        }


@dataclass(frozen=True)
class LatencyReport:
    """Latencies of several ONNX models, measured side by side."""

    paths: tuple[Path, ...]
    stats: tuple[dict[int, LatencyStats], ...]  # per path, per batch size
    threads: int
    rounds: int

    def of(self, path: Path) -> dict[int, LatencyStats]:
        return self.stats[self.paths.index(Path(path))]

    def speedup(self, base: Path, other: Path, batch: int) -> float:
        """How many times faster ``other`` is than ``base`` at ``batch`` (wall clock)."""
        return self.of(base)[batch].median_s / self.of(other)[batch].median_s

    def cpu_speedup(self, base: Path, other: Path, batch: int) -> float:
        """The same ratio in the calling thread's CPU time."""
        return self.of(base)[batch].cpu_median_s / self.of(other)[batch].cpu_median_s


def _input_for(sess: Any, batch: int, input_shape: Sequence[int] | None, seed: int) -> np.ndarray:
    if input_shape is None:
        dims = sess.get_inputs()[0].shape[1:]
        if not all(isinstance(d, int) for d in dims):
            raise UsageError(
                f"cannot tell the input shape of the ONNX model: {dims}; pass input_shape")
        input_shape = [int(d) for d in dims]
    rng = np.random.default_rng(seed)
    return rng.random((batch, *input_shape), dtype=np.float32)


def measure_latency(
    onnx_paths: Sequence[Path],
    batch_sizes: Sequence[int] = (1, 256),
    *,
    input_shape: Sequence[int] | None = None,
    rounds: int = 15,
    warmup: int = 10,
    round_time_s: float = 0.03,
    min_calls: int = 5,
    threads: int = 1,
    seed: int = 0,
) -> LatencyReport:
    """Median-of-medians latency of each model at each batch size, interleaved."""
    if not onnx_paths:
        raise UsageError("measure_latency needs at least one ONNX model")
    if rounds < 1 or warmup < 0 or min_calls < 1:
        raise UsageError("measure_latency: rounds and min_calls must be >= 1, warmup >= 0")
    paths = tuple(Path(p) for p in onnx_paths)
    sessions = [make_session(p, threads=threads) for p in paths]
    names = [s.get_inputs()[0].name for s in sessions]
    result: list[dict[int, LatencyStats]] = [{} for _ in paths]
    for batch in batch_sizes:
        x = _input_for(sessions[0], batch, input_shape, seed)
        calls: list[int] = []
        for sess, name in zip(sessions, names, strict=True):
            feed = {name: x}
            for _ in range(max(1, warmup)):
                sess.run(None, feed)
            # Calibrate the block size so that one block takes about round_time_s.
            t0 = time.perf_counter()
            probe = 3
            for _ in range(probe):
                sess.run(None, feed)
            per_call = (time.perf_counter() - t0) / probe
            calls.append(max(min_calls, math.ceil(round_time_s / max(per_call, 1e-7))))
        medians: list[list[float]] = [[] for _ in paths]
        cpu_medians: list[list[float]] = [[] for _ in paths]
        order = list(range(len(paths)))
        wall, cpu = time.perf_counter, time.thread_time
        for r in range(rounds):
            for i in order if r % 2 == 0 else reversed(order):
                sess, feed = sessions[i], {names[i]: x}
                times, cpu_times = [], []
                for _ in range(calls[i]):
                    c0 = cpu()
                    t0 = wall()
                    sess.run(None, feed)
                    t1 = wall()
                    cpu_times.append(cpu() - c0)
                    times.append(t1 - t0)
                medians[i].append(statistics.median(times))
                cpu_medians[i].append(statistics.median(cpu_times))
        for i in range(len(paths)):
            result[i][batch] = LatencyStats(
                batch=batch,
                median_s=statistics.median(medians[i]),
                round_medians_s=tuple(medians[i]),
                calls_per_round=calls[i],
                cpu_median_s=statistics.median(cpu_medians[i]),
            )
    return LatencyReport(paths=paths, stats=tuple(result), threads=threads, rounds=rounds)
