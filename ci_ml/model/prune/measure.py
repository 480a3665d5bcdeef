"""Base and candidate exported alike, checked for parity and timed side by side in ONNX Runtime."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ci_ml.model.bench import LatencyReport, measure_latency
from ci_ml.model.export import ExportResult, Parity, check_parity, export_onnx
from ci_ml.model.prune.settings import REAL_SPEEDUP
from ci_ml.model.zoo import count_macs, count_params

Data = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class ModelStats:
    """One model as measured: sizes, cost, latency (ONNX Runtime, 1 thread), accuracy."""

    params: int
    nonzero_params: int
    macs: int
    onnx: ExportResult
    latency_us: Mapping[int, float]  # wall clock
    accuracy: float  # percent, on the evaluation data
    cpu_us: Mapping[int, float] = field(default_factory=dict)  # calling thread's CPU time

    def to_json(self) -> dict[str, Any]:
        return {
            "params": self.params,
            "nonzero_params": self.nonzero_params,
            "macs": self.macs,
            "onnx_bytes": self.onnx.bytes_total,
            "onnx": self.onnx.to_json(),
            "latency_us": {str(b): round(v, 3) for b, v in sorted(self.latency_us.items())},
            "cpu_us": {str(b): round(v, 3) for b, v in sorted(self.cpu_us.items())},
            "accuracy": round(self.accuracy, 4),
        }


@dataclass(frozen=True)
class Comparison:
    """A base model and a candidate, exported alike and measured side by side."""

    base: ModelStats
    candidate: ModelStats
    parity: Parity
    latency: LatencyReport

    def speedup(self, batch: int) -> float:
        """Wall-clock latency ratio, base / candidate."""
        return self.base.latency_us[batch] / self.candidate.latency_us[batch]

    def cpu_speedup(self, batch: int) -> float:
        """The same ratio in CPU time of the inference thread (robust to a loaded machine)."""
        return self.base.cpu_us[batch] / self.candidate.cpu_us[batch]

    def sure_speedup(self, batch: int) -> float:
        """The smaller of the two: what decisions use, so contention cannot inflate it."""
        return min(self.speedup(batch), self.cpu_speedup(batch))

    @property
    def speedups(self) -> dict[int, float]:
        return {b: self.speedup(b) for b in sorted(self.base.latency_us)}

    @property
    def size_ratio(self) -> float:
        return self.base.onnx.bytes_total / self.candidate.onnx.bytes_total

    @property
    def params_ratio(self) -> float:
        return self.base.params / max(1, self.candidate.params)

    @property
    def macs_ratio(self) -> float:
        return self.base.macs / max(1, self.candidate.macs)

    @property
    def accuracy_drop(self) -> float:
        return self.base.accuracy - self.candidate.accuracy

    @property
    def real_speedup(self) -> bool:
        """True only if the candidate is measurably faster at every batch size."""
        return min(self.sure_speedup(b) for b in self.speedups) >= REAL_SPEEDUP

    @property
    def verdict(self) -> str:
        s = ", ".join(f"{self.sure_speedup(b):.2f}x at batch {b}" for b in self.speedups)
        if self.real_speedup:
            return (f"real speedup: {s}; {self.size_ratio:.2f}x smaller on disk, "
                    f"{self.macs_ratio:.2f}x fewer MACs")
        zero_share = 1.0 - self.candidate.nonzero_params / max(1, self.candidate.params)
        why = ""
        if zero_share > 0.05 and self.size_ratio < REAL_SPEEDUP:
            why = (f"; {zero_share:.0%} of the weights are zero but the tensors keep their "
                   "shapes, so dense kernels still compute every one (unstructured sparsity "
                   "is not a speedup)")
        return (f"no real speedup: {s}; {self.size_ratio:.2f}x size, "
                f"{self.params_ratio:.2f}x parameters{why}")

    def to_json(self) -> dict[str, Any]:
        return {
            "base": self.base.to_json(),
            "candidate": self.candidate.to_json(),
            "ratios": {
                "speedup": {str(b): round(v, 3) for b, v in self.speedups.items()},
                "cpu_speedup": {str(b): round(self.cpu_speedup(b), 3) for b in self.speedups},
                "bytes": round(self.size_ratio, 3),
                "params": round(self.params_ratio, 3),
                "macs": round(self.macs_ratio, 3),
            },
            "accuracy_drop": round(self.accuracy_drop, 4),
            "parity": self.parity.to_json(),
            "real_speedup": self.real_speedup,
            "verdict": self.verdict,
        }


@torch.no_grad()
def model_accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    model.eval()
    hits = 0
    for i in range(0, len(x), 1024):
        hits += int((model(torch.from_numpy(x[i : i + 1024])).argmax(1).numpy()
                     == y[i : i + 1024]).sum())
    return 100.0 * hits / len(x)


def nonzero_params(model: nn.Module) -> int:
    return int(sum(int(torch.count_nonzero(p)) for p in model.parameters()))


def _stats(model: nn.Module, input_shape: Sequence[int], export: ExportResult,
           lat: LatencyReport, accuracy: float) -> ModelStats:
    stats = lat.of(export.path)
    return ModelStats(
        params=count_params(model),
        nonzero_params=nonzero_params(model),
        macs=count_macs(model, input_shape),
        onnx=export,
        latency_us={b: st.median_us for b, st in stats.items()},
        accuracy=accuracy,
        cpu_us={b: st.cpu_median_us for b, st in stats.items()},
    )


def compare_models(
    base: nn.Module,
    candidate: nn.Module,
    input_shape: Sequence[int],
    test_data: Data,
    work_dir: Path,
    *,
    batch_sizes: Sequence[int] = (1, 256),
    rounds: int = 15,
    base_export: ExportResult | None = None,
    candidate_export: ExportResult | None = None,
    base_accuracy: float | None = None,
    candidate_name: str = "pruned",
    extra_onnx: Sequence[Path] = (),
) -> Comparison:
    """Export both models alike, check parity, and time them side by side.

    The same path measures every candidate, which is what makes the negative control
    meaningful: a model whose weights are merely masked to zero measures about 1.0x.
    ``extra_onnx`` files (e.g. quantized variants) join the same interleaved measurement.
    """
    x, y = test_data
    work_dir = Path(work_dir)
    if base_export is None:
        base_export = export_onnx(base, input_shape, work_dir / "base.onnx")
    cand_export = candidate_export or export_onnx(candidate, input_shape,
                                                  work_dir / f"{candidate_name}.onnx")
    parity = check_parity(candidate, cand_export.path, x)
    paths = [base_export.path, cand_export.path, *extra_onnx]
    lat = measure_latency(paths, batch_sizes, input_shape=input_shape, rounds=rounds)
    base_acc = model_accuracy(base, x, y) if base_accuracy is None else base_accuracy
    return Comparison(
        base=_stats(base, input_shape, base_export, lat, base_acc),
        candidate=_stats(candidate, input_shape, cand_export, lat, model_accuracy(candidate, x, y)),
        parity=parity,
        latency=lat,
    )
