"""The run model: P(success) and expected minutes of a step's run, fitted on the history.

A step needs some amount of each resource (memory, time, open files, file size);
a run succeeds when every limit is above its need and nothing else goes wrong.
For each (project, step) and resource, a Bayesian linear regression predicts the
need from the run's settings and input size:

- memory in bytes, linear in micro-batch (batch / accumulation), processes,
  threads and input size;
- time in log-seconds, linear in the logs of the same;
- open files and file size: a constant need (ci-ml measures open files; file size
  only through the limit it broke).

The coefficients have a weak prior (where the history never varied a setting,
the prior says what changing it does: half the memory proportional to the
micro-batch, memory per process, smaller micro-batches a little slower, threads and
processes no faster until the history shows it; see
``MEMORY_PRIOR`` / ``TIME_PRIOR``); successful runs are observations; failed runs
are *censored* observations (an out-of-memory run at limit L needed more than L, a
timed-out run more than its timeout). The posterior is sampled; samples that
contradict a censored observation are dropped; P(need < limit) is the share of
the remaining samples (with the run-to-run noise) under the candidate's limit.

P(success) = product over resources of P(need < limit) x P(no other failure),
the last from the record of runs with the same cache key (inputs, config, code),
recency-weighted and smoothed towards 0.95.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ci_ml.autofix.interface import FailureClass, Remedy, RunModel, RunRecord, Settings
from ci_ml.limits.interface import MIB, Enforcement

SAMPLES = 2000
Prior = Sequence[tuple[str, float, float]]
# P(a run does not fail for a reason its settings cannot explain) before any run of the
# same key says otherwise, and how many runs that prior weighs.
OTHER_PRIOR = (0.95, 2.0)
# Half-life, in runs, of the weight of past outcomes of the same key.
KEY_HALF_LIFE = 3.0
_RESOURCE_RULES = {"open-files": "open_files", "file-size-limit": "file_size",
                   "sigxfsz": "file_size", "shell-sigxfsz": "file_size"}
# Memory (linear, bytes): (feature, prior mean slope, prior sd) as multiples of the
# reference need over the reference feature value (for "threads": of the need alone).
MEMORY_PRIOR = (("micro_batch", 0.5, 0.5), ("nproc", 0.5, 0.5), ("threads", 0.02, 0.03),
                ("input_mb", 0.25, 0.25))
# Time (log-seconds on log-features): elasticities. More threads or processes are not
# assumed to help (mean 0): on a shared 2-core runner they often do not, and they change
# what is computed; the history has to show it.
TIME_PRIOR = (("log_micro_batch", -0.15, 0.2), ("log_batch", -0.1, 0.3),
              ("log_nproc", 0.0, 0.3), ("log_threads", 0.0, 0.3), ("log_input", 1.0, 0.3))


def features(settings: Settings, input_bytes: int) -> dict[str, float]:
    micro = float(settings.micro_batch or 1)
    batch = float(settings.batch_size or 1)
    nproc = float(settings.nproc or 1)
    threads = float(settings.threads or 1)
    size = float(max(input_bytes, 1))
    return {"micro_batch": micro, "nproc": nproc, "threads": threads, "input_mb": size / MIB,
            "log_micro_batch": math.log(micro), "log_batch": math.log(batch),
            "log_nproc": math.log(nproc), "log_threads": math.log(threads),
            "log_input": math.log(size)}


def machine_memory() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError):
        return 16 << 30


def memory_need(record: RunRecord, kind: Enforcement) -> float | None:
    """What the memory limit of ``kind`` compares against, as the run measured it."""
    u = record.usage
    if kind is Enforcement.RLIMIT_AS:
        return float(u.peak_vm_bytes) if u.peak_vm_bytes else None
    # Anonymous memory is what a cgroup limit cannot reclaim; the cgroup's own peak also
    # counts file cache it would have reclaimed, and sits at the limit whenever it is tight.
    if u.peak_anon_bytes:
        return float(u.peak_anon_bytes)
    return float(u.peak_rss_bytes) if u.peak_rss_bytes else None


@dataclass
class _Regression:
    """y = w . (x - x0) + noise, with a Gaussian prior on w; sampled, censored."""

    names: tuple[str, ...]
    x0: np.ndarray
    prior_mean: np.ndarray
    prior_sd: np.ndarray
    obs_x: list[np.ndarray] = field(default_factory=list)
    obs_y: list[float] = field(default_factory=list)
    cens_x: list[np.ndarray] = field(default_factory=list)
    cens_y: list[float] = field(default_factory=list)
    noise_floor: float = 0.0
    cold_noise: float = 0.0

    def design(self, xs: Sequence[np.ndarray]) -> np.ndarray:
        rows = np.array(xs, dtype=float).reshape(len(xs), len(self.names) - 1)
        return np.hstack([np.ones((len(xs), 1)), rows - self.x0])

    def _posterior(self, xs: list[np.ndarray], ys: list[float]) -> tuple[np.ndarray, np.ndarray,
                                                                       float]:
        prec0 = np.diag(1.0 / self.prior_sd ** 2)
        if not xs:
            return self.prior_mean.copy(), np.diag(self.prior_sd ** 2), self.cold_noise
        X, y = self.design(xs), np.array(ys, dtype=float)
        noise = max(self.cold_noise, self.noise_floor)
        mean = self.prior_mean
        for _ in range(3):   # noise from the residuals, then the posterior again
            prec = prec0 + X.T @ X / noise ** 2
            cov = np.linalg.inv(prec)
            mean = cov @ (prec0 @ self.prior_mean + X.T @ y / noise ** 2)
            resid = y - X @ mean
            if len(y) >= 3:
                noise = max(float(np.sqrt(np.mean(resid ** 2) * len(y) / max(len(y) - 1, 1))),
                            self.noise_floor)
        return mean, cov, noise

    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, float]:
        """Coefficient samples consistent with the censored observations, and the noise."""
        mean, cov, noise = self._posterior(self.obs_x, self.obs_y)
        w = rng.multivariate_normal(mean, cov, size=n, method="cholesky")
        if not self.cens_x:
            return w, noise
        C = self.design(self.cens_x)
        floor = np.array(self.cens_y)
        need = w @ C.T + rng.normal(0.0, noise, size=(n, len(self.cens_y)))
        keep = np.all(need > floor, axis=1)
        if keep.sum() >= max(n // 50, 20):
            return w[keep], noise
        # The data and the failures disagree (a need grew, a machine changed): count each
        # failure as an observation a little above its limit instead.
        bumped = [y + abs(y) * 0.1 + noise for y in self.cens_y]
        mean, cov, noise = self._posterior(self.obs_x + self.cens_x, self.obs_y + bumped)
        return rng.multivariate_normal(mean, cov, size=n, method="cholesky"), noise


@dataclass(frozen=True)
class _StepData:
    records: tuple[RunRecord, ...]

    @property
    def ok(self) -> list[RunRecord]:
        return [r for r in self.records if r.ok]

    def failed_for(self, klass: FailureClass, resource: str | None = None) -> list[RunRecord]:
        out = []
        for r in self.records:
            if r.ok or r.failure is None or r.failure.failure_class is not klass:
                continue
            if resource is None or _RESOURCE_RULES.get(r.failure.rule) == resource:
                out.append(r)
        return out


def _unexplained(record: RunRecord) -> bool:
    """A failure neither a resource nor the network explains (a transient failure says
    nothing about the next run; a resource failure is the need models' business)."""
    if record.ok:
        return False
    return record.failure is None or record.failure.failure_class.remedy in (
        Remedy.DETERMINISTIC, Remedy.UNKNOWN)


class NeedModel(RunModel):
    def __init__(self, seed: int = 0, samples: int = SAMPLES) -> None:
        self.seed = seed
        self.samples = samples
        self.steps: dict[tuple[str, str], _StepData] = {}

    def fit(self, records: Iterable[RunRecord]) -> NeedModel:
        grouped: dict[tuple[str, str], list[RunRecord]] = {}
        for r in records:
            if not r.cached:
                grouped.setdefault((r.project, r.step), []).append(r)
        self.steps = {k: _StepData(tuple(v)) for k, v in grouped.items()}
        return self

    def runs(self, project: str, step: str) -> int:
        data = self.steps.get((project, step))
        return len(data.records) if data else 0

    def predict(self, step: str, settings: Sequence[Settings], input_bytes: int,
                failed: RunRecord | None = None) -> list[tuple[float, float, dict[str, float]]]:
        project = failed.project if failed is not None else ""
        data = self.steps.get((project, step), _StepData(()))
        rng = np.random.default_rng(self.seed)
        ref = failed.settings if failed is not None else settings[0]
        ref_input = failed.input_bytes if failed is not None else input_bytes
        kind = failed.enforcement if failed is not None else Enforcement.NONE
        feats = [features(s, input_bytes) for s in settings]
        p_mem = self._p_memory(data, ref, ref_input, kind, settings, feats, rng)
        p_time, minutes = self._p_time(data, ref, ref_input, failed, settings, feats, rng)
        p_files = self._p_constant(data, "open_files", [s.open_files for s in settings], failed)
        p_size = self._p_constant(data, "file_size", [s.file_size_mb for s in settings], failed)
        p_other = self._p_other(data, failed)
        out = []
        for i in range(len(settings)):
            detail = {"memory": float(p_mem[i]), "time": float(p_time[i]),
                      "open_files": float(p_files[i]), "file_size": float(p_size[i]),
                      "other": p_other}
            p = float(p_mem[i] * p_time[i] * p_files[i] * p_size[i] * p_other)
            out.append((p, float(minutes[i]), detail))
        return out

    # -- memory ---------------------------------------------------------------------------
    def _p_memory(self, data: _StepData, ref: Settings, ref_input: int, kind: Enforcement,
                  settings: Sequence[Settings], feats: list[dict[str, float]],
                  rng: np.random.Generator) -> np.ndarray:
        machine = float(machine_memory())
        limits = np.array([float(s.memory_mb * MIB) if s.memory_mb else machine
                           for s in settings])
        observed = [(r, y) for r in data.ok if (y := memory_need(r, kind))]
        censored = [(r, float(r.settings.memory_mb * MIB) if r.settings.memory_mb else machine)
                    for r in data.failed_for(FailureClass.OUT_OF_MEMORY)]
        if not observed and not censored:
            return np.ones(len(settings))
        x0f = features(ref, ref_input)
        y0 = float(np.median([y for _, y in observed])) if observed else \
            1.5 * min(y for _, y in censored)
        means = [y0] + [m * y0 / (x0f[n] if n != "threads" else 1.0)
                        for n, m, _ in MEMORY_PRIOR]
        sds = [y0 * (1.0 if observed else 0.5)] + [
            s * y0 / (x0f[n] if n != "threads" else 1.0) for n, _, s in MEMORY_PRIOR]
        reg = self._regression(MEMORY_PRIOR, x0f, means, sds, observed, censored,
                               noise_floor=0.02 * y0, cold_noise=0.05 * y0)
        need = self._draw(reg, MEMORY_PRIOR, feats, rng)
        return np.asarray((need < limits).mean(axis=0))

    # -- time -----------------------------------------------------------------------------
    def _p_time(self, data: _StepData, ref: Settings, ref_input: int, failed: RunRecord | None,
                settings: Sequence[Settings], feats: list[dict[str, float]],
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        limits = np.array([s.timeout_s if s.timeout_s else math.inf for s in settings])
        if failed is not None and failed.failure is not None and failed.settings.timeout_s is None \
                and failed.failure.failure_class is FailureClass.TIMEOUT:
            # A time limit that is not ci-ml's struck (a tool's own, scan.timeout_s): no
            # setting here moves it, and the same run would strike it again.
            minutes = np.full(len(settings), max(failed.usage.wall_s, 1.0) / 60.0)
            return np.zeros(len(settings)), minutes
        observed = [(r, math.log(max(r.usage.wall_s, 1e-3))) for r in data.ok if r.usage.wall_s]
        censored = [(r, math.log(r.settings.timeout_s))
                    for r in data.failed_for(FailureClass.TIMEOUT) if r.settings.timeout_s]
        if observed:
            y0 = float(np.median([y for _, y in observed]))
        elif censored:
            y0 = max(y for _, y in censored) + math.log(1.5)
        else:   # a run that died early ran at least this long: assume it was half-way
            wall = failed.usage.wall_s if failed is not None else 60.0
            y0 = math.log(max(wall, 1.0) * 2.0)
        means = [y0] + [m for _, m, _ in TIME_PRIOR]
        sds = [1.0 if observed else 0.5] + [s for _, _, s in TIME_PRIOR]
        reg = self._regression(TIME_PRIOR, features(ref, ref_input), means, sds, observed,
                               censored, noise_floor=0.05, cold_noise=0.25)
        seconds = np.exp(self._draw(reg, TIME_PRIOR, feats, rng))
        p = (seconds < limits).mean(axis=0)
        # A run stops at its timeout: that bounds what it can cost.
        minutes = np.minimum(seconds, limits).mean(axis=0) / 60.0
        return np.asarray(p), np.asarray(minutes)

    # -- open files, file size -------------------------------------------------------------
    def _p_constant(self, data: _StepData, resource: str, limits: Sequence[int | None],
                    failed: RunRecord | None) -> np.ndarray:
        """A need that does not depend on the settings: the most any successful run used
        (open files), or, from the failures alone, a Pareto prior above the broken limit."""
        broke = [r for r in data.failed_for(FailureClass.RESOURCE_EXHAUSTED, resource)]
        attr = "open_files" if resource == "open_files" else "file_size_mb"
        floors = [getattr(r.settings, attr) for r in broke if getattr(r.settings, attr)]
        if failed is not None and failed.failure is not None and \
                _RESOURCE_RULES.get(failed.failure.rule) == resource and not floors:
            # The machine's own limit broke (no ci-ml limit was set): no setting helps.
            return np.zeros(len(limits))
        used = max((r.usage.peak_open_files for r in data.ok), default=0) \
            if resource == "open_files" else 0
        floor = max(floors, default=0)
        out = []
        for limit in limits:
            if limit is None:
                out.append(1.0 if not floors else 0.0)
            elif floor and limit <= floor:
                out.append(0.0)
            elif floor:
                out.append(1.0 - (floor / limit) ** 2)   # Pareto(2) above the broken limit
            else:
                out.append(1.0 if limit > used else 0.0)
        return np.array(out)

    # -- everything else --------------------------------------------------------------------
    def _p_other(self, data: _StepData, failed: RunRecord | None) -> float:
        """P(no failure the settings cannot explain): the recency-weighted record of runs
        with the same inputs, config and code (the cache key) as the failed one, smoothed
        towards a prior; other keys' failures (another version of the code) do not count."""
        good = bad = 0.0
        same = [r for r in data.records
                if failed is not None and r.key == failed.key and r.id != failed.id]
        if failed is not None and _unexplained(failed):
            same.append(failed)   # this failure is itself one the settings did not explain
        for age, r in enumerate(reversed(same)):
            weight = 0.5 ** (age / KEY_HALF_LIFE)
            if r.ok:
                good += weight
            elif _unexplained(r):
                bad += weight
        prior, strength = OTHER_PRIOR
        return (good + strength * prior) / (good + bad + strength)

    @staticmethod
    def _vec(record: RunRecord, prior: Prior) -> np.ndarray:
        f = features(record.settings, record.input_bytes)
        return np.array([f[n] for n, _, _ in prior])

    def _regression(self, prior: Prior, x0f: dict[str, float], means: list[float],
                    sds: list[float], observed: list[tuple[RunRecord, float]],
                    censored: list[tuple[RunRecord, float]], noise_floor: float,
                    cold_noise: float) -> _Regression:
        """Centered on the failed run's settings: the intercept is its own need."""
        reg = _Regression(("intercept", *(n for n, _, _ in prior)),
                          np.array([x0f[n] for n, _, _ in prior]), np.array(means),
                          np.array(sds), noise_floor=noise_floor, cold_noise=cold_noise)
        for r, y in observed:
            reg.obs_x.append(self._vec(r, prior))
            reg.obs_y.append(y)
        for r, y in censored:
            reg.cens_x.append(self._vec(r, prior))
            reg.cens_y.append(y)
        return reg

    def _draw(self, reg: _Regression, prior: Prior, feats: list[dict[str, float]],
              rng: np.random.Generator) -> np.ndarray:
        """Samples (rows) of the need of each candidate (columns), run-to-run noise included.

        One noise draw per sample is shared by every candidate (common random numbers):
        candidates that need the same get the same prediction, not two noisy ones.
        """
        w, noise = reg.sample(rng, self.samples)
        X = reg.design([np.array([f[n] for n, _, _ in prior]) for f in feats])
        return np.asarray(w @ X.T + rng.normal(0.0, noise, size=(len(w), 1)))
