"""Run records for the model and policy tests: what the run history would hold."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from ci_ml.autofix.classify import RuleClassifier
from ci_ml.autofix.interface import Failure, RunRecord, Settings
from ci_ml.limits import MIB, Enforcement, Usage

_ids = itertools.count()
_START = datetime(2026, 1, 1, tzinfo=UTC)


def record(*, step: str = "train", ok: bool = True, memory_mb: int | None = 1024,
           timeout_s: float | None = 600.0, batch: int | None = 256, accumulation: int = 1,
           threads: int = 1, nproc: int = 1, anon_mb: float = 300.0, wall_s: float = 30.0,
           log: str = "", exit_code: int | None = None, signal: str | None = None,
           timed_out: bool = False, oom_killed: bool = False, key: str = "k",
           run_id: str | None = None, attempt: int = 0, project: str = "digits",
           input_bytes: int = 100_000, open_files: int | None = None,
           file_size_mb: int | None = None, **extra: Any) -> RunRecord:
    n = next(_ids)
    settings = Settings(memory_mb=memory_mb, timeout_s=timeout_s, batch_size=batch,
                        accumulation_steps=accumulation if batch else None,
                        threads=threads if batch else None, nproc=nproc if batch else None,
                        open_files=open_files, file_size_mb=file_size_mb)
    failed = not ok
    code = exit_code if exit_code is not None or signal else (1 if failed else 0)
    r = RunRecord(
        id=f"r{n}", ts=(_START + timedelta(minutes=n)).isoformat(), run_id=run_id or f"run{n}",
        attempt=attempt, writer="local", project=project, step=step, key=key,
        settings=settings, input_bytes=input_bytes,
        usage=Usage(peak_rss_bytes=int((anon_mb + 120) * MIB), peak_anon_bytes=int(anon_mb * MIB),
                    cpu_s=wall_s * 0.9, wall_s=wall_s),
        enforcement=Enforcement.CGROUP_V1 if memory_mb else Enforcement.NONE, isolated=True,
        exit_code=None if signal else code, signal=signal, timed_out=timed_out,
        oom_killed=oom_killed, status="failed" if failed else "passed",
        message="failed" if failed else "", log_tail=log if failed else "", extra=extra)
    if failed:
        from dataclasses import replace

        r = replace(r, failure=RuleClassifier().classify(Failure(
            r.exit_code, signal, timed_out, oom_killed, memory_mb is not None, log)))
    return r


def oom(**kw: Any) -> RunRecord:
    return record(ok=False, signal="SIGKILL", oom_killed=True, **kw)


def timeout(**kw: Any) -> RunRecord:
    return record(ok=False, signal="SIGTERM", timed_out=True, **kw)


def need_mb(batch: int, accumulation: int = 1) -> float:
    """The workload these tests model: 300 MiB of runtime + 0.25 MiB per micro-batch sample."""
    return 300.0 + 0.25 * -(-batch // accumulation)


def history_of_successes() -> list[RunRecord]:
    """Successful runs at several batch sizes and accumulations, with their measured needs."""
    runs = []
    for batch, acc in ((64, 1), (256, 1), (512, 1), (1024, 1), (1024, 4), (512, 2)):
        for _ in range(2):
            runs.append(record(batch=batch, accumulation=acc, memory_mb=2048,
                               anon_mb=need_mb(batch, acc),
                               wall_s=30.0 * (1 + 0.1 * (acc - 1))))
    return runs
