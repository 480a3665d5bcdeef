"""Candidate retry configurations, their cost, and the one minimizing P(fail) * penalty + cost.

Candidates vary what can plausibly cure the failure: the memory limit, the
gradient accumulation (the same effective batch in smaller micro-batches), threads,
processes and the timeout for out-of-memory and timeout failures; the open-files
and file-size limits for exhausted resources. The batch size itself never changes
(it is part of what the model learns). Bounds come from the config
(``autofix.max_memory_mb``, ``autofix.max_timeout_s``) and the machine (its memory
and CPU count).
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ci_ml.autofix.interface import Candidate, FailureClass, Prediction, RunModel, RunRecord, Settings
from ci_ml.autofix.model import machine_memory
from ci_ml.limits.interface import MIB

MEMORY_FACTORS = (1.0, 1.25, 1.5, 2.0, 3.0, 4.0)
# A timeout far above the need costs nothing unless the run hangs: the expected cost counts
# minutes up to the timeout, so long timeouts are chosen only when the model is unsure.
TIMEOUT_FACTORS = (1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0)
ACCUMULATION_FACTORS = (1, 2, 4, 8, 16)
LIMIT_FACTORS = (1, 2, 4, 8)
# Batch norm statistics over fewer samples than this get noisy: no smaller micro-batches.
MIN_MICRO_BATCH = 8


@dataclass(frozen=True)
class Prices:
    per_minute: float
    per_gb_minute: float
    penalty: float

    @classmethod
    def from_section(cls, section: Mapping[str, Any]) -> Prices:
        return cls(float(section["price_per_minute"]), float(section["price_per_gb_minute"]),
                   float(section["penalty"]))

    def rate(self, memory_bytes: float) -> float:
        """Price of one minute of a run holding ``memory_bytes``."""
        return self.per_minute + self.per_gb_minute * memory_bytes / (1 << 30)


@dataclass(frozen=True)
class Bounds:
    max_memory_mb: int
    max_timeout_s: float
    cpus: int

    @classmethod
    def from_section(cls, section: Mapping[str, Any]) -> Bounds:
        configured = section.get("max_memory_mb")
        return cls(int(configured) if configured else machine_memory() // MIB,
                   float(section["max_timeout_s"]), os.cpu_count() or 1)


def _round_mb(value: float) -> int:
    return int(math.ceil(value / 32.0) * 32)


def _options(current: int | float | None, factors: Iterable[float], cap: float,
             rounder: Any = None) -> list[Any]:
    if current is None:
        return [None]
    out = []
    for f in factors:
        value = current * f
        value = rounder(value) if rounder else value
        if value <= cap or f == 1:
            out.append(value if f != 1 else current)
    return sorted(set(out))


def _directed(current: int | None, factors: Iterable[int], up: bool, cap: int,
              floor: int = 1) -> list[Any]:
    """``current`` and its multiples (``up``) or divisions, within [floor, cap]."""
    if current is None:
        return [None]
    values = {current}
    for f in factors:
        value = current * f if up else current // f
        if floor <= value <= cap:
            values.add(value)
    return sorted(values)


def candidates(current: Settings, klass: FailureClass, bounds: Bounds) -> list[Settings]:
    """Every configuration worth scoring for a failure of ``klass``, ``current`` first.

    Each setting moves only in the direction that can cure the failure: for out of
    memory more memory, more accumulation (smaller micro-batches), fewer threads and
    processes; for a timeout a longer timeout, less accumulation, more threads and
    processes. The timeout may grow for any class (smaller micro-batches are slower).
    """
    memory_ok = klass is FailureClass.OUT_OF_MEMORY
    faster = klass is FailureClass.TIMEOUT
    memory = _options(current.memory_mb, MEMORY_FACTORS if memory_ok else (1.0,),
                      bounds.max_memory_mb, _round_mb)
    timeout = _options(current.timeout_s, TIMEOUT_FACTORS, bounds.max_timeout_s,
                       lambda v: float(math.ceil(v)))
    accumulation: list[Any] = [current.accumulation_steps]
    if current.batch_size is not None and current.accumulation_steps is not None and \
            (memory_ok or faster):
        floor = min(MIN_MICRO_BATCH, current.batch_size)
        most = max(1, current.batch_size // floor)
        accumulation = _directed(current.accumulation_steps, ACCUMULATION_FACTORS[1:],
                                 up=memory_ok, cap=most)
    threads, nproc = [current.threads], [current.nproc]
    if memory_ok or faster:
        threads = _directed(current.threads, (2, 4), up=faster, cap=bounds.cpus)
        nproc = _directed(current.nproc, (2, 4), up=faster, cap=bounds.cpus)
    files: list[Any] = [current.open_files]
    size: list[Any] = [current.file_size_mb]
    if klass is FailureClass.RESOURCE_EXHAUSTED:
        files = _options(current.open_files, LIMIT_FACTORS, 1 << 20, int)
        size = _options(current.file_size_mb, LIMIT_FACTORS, 1 << 30, int)
    out = [current]
    for m, t, a, th, n, of, fs in itertools.product(memory, timeout, accumulation, threads,
                                                    nproc, files, size):
        s = current.with_(memory_mb=m, timeout_s=t, accumulation_steps=a, threads=th,
                          nproc=n, open_files=of, file_size_mb=fs)
        if s != current:
            out.append(s)
    return out


def score(model: RunModel, failed: RunRecord, settings: Sequence[Settings], prices: Prices,
          p_floor: float = 0.0) -> list[Candidate]:
    """Every candidate with its prediction; ``settings[0]`` should be the failed one."""
    predictions = model.predict(failed.step, settings, failed.input_bytes, failed)
    out = []
    for s, (p, minutes, detail) in zip(settings, predictions, strict=True):
        p = max(min(p, 1.0), p_floor)
        memory = float(s.memory_mb * MIB) if s.memory_mb else float(
            failed.usage.peak_rss_bytes or 0)
        cost = minutes * prices.rate(memory)
        objective = (1.0 - p) * prices.penalty + cost
        out.append(Candidate(s, Prediction(p, minutes, cost, objective, detail),
                             s.changes_from(failed.settings)))
    return out


def best(scored: Sequence[Candidate]) -> list[Candidate]:
    """Ranked by the objective; among equals, the fewest changes, then the cheapest."""
    return sorted(scored, key=lambda c: (round(c.prediction.objective, 9), len(c.changes),
                                         c.prediction.cost))
