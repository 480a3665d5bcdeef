"""ONNX Runtime latency, measured so that a shared, noisy machine cannot skew a comparison.

* one intra-op thread per session (what a CPU model server usually gets per request);
* warm-up calls before timing;
* interleaved rounds: in each round every model runs a block of calls, and the order
  of the models alternates from round to round, so slow phases of the machine hit all
  models alike;
* each round gives a median per model; the result is the median of those medians.
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
    median_s: float  # median of the per-round medians
    round_medians_s: tuple[float, ...]
    calls_per_round: int

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
        """How many times faster ``other`` is than ``base`` at ``batch``."""
        return self.of(base)[batch].median_s / self.of(other)[batch].median_s


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
        order = list(range(len(paths)))
        for r in range(rounds):
            for i in order if r % 2 == 0 else reversed(order):
                sess, feed = sessions[i], {names[i]: x}
                times = []
                for _ in range(calls[i]):
                    t = time.perf_counter()
                    sess.run(None, feed)
                    times.append(time.perf_counter() - t)
                medians[i].append(statistics.median(times))
        for i in range(len(paths)):
            result[i][batch] = LatencyStats(
                batch=batch,
                median_s=statistics.median(medians[i]),
                round_medians_s=tuple(medians[i]),
                calls_per_round=calls[i],
            )
    return LatencyReport(paths=paths, stats=tuple(result), threads=threads, rounds=rounds)
