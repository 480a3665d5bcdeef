"""What a pruning run found: the trials of the search and the outcome, as JSON for the report."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from ci_ml.model.prune.measure import Comparison
from ci_ml.model.prune.quantize import QuantVariant
from ci_ml.model.prune.settings import PruneSettings
from ci_ml.model.run_manifest import package_versions
from ci_ml.model.zoo import ModelSpec

REPORT_FORMAT = "ci-ml/prune-report/1"


@dataclass(frozen=True)
class Trial:
    """One pruning setting tried, for the trade-off plot."""

    ratio: float
    widths: tuple[int, ...]
    params: int
    macs: int
    onnx_bytes: int
    accuracy: float
    accuracy_drop: float
    speedup: Mapping[int, float]
    within_budget: bool
    chosen: bool = False
    cpu_speedup: Mapping[int, float] = field(default_factory=dict)

    @property
    def sure_speedup(self) -> dict[int, float]:
        """Per batch size, the smaller of the wall-clock and CPU-time ratios."""
        return {b: min(v, self.cpu_speedup.get(b, v)) for b, v in self.speedup.items()}

    def to_json(self) -> dict[str, Any]:
        return {
            "ratio": round(self.ratio, 4),
            "widths": list(self.widths),
            "params": self.params,
            "macs": self.macs,
            "onnx_bytes": self.onnx_bytes,
            "accuracy": round(self.accuracy, 4),
            "accuracy_drop": round(self.accuracy_drop, 4),
            "speedup": {str(b): round(v, 3) for b, v in sorted(self.speedup.items())},
            "cpu_speedup": {str(b): round(v, 3) for b, v in sorted(self.cpu_speedup.items())},
            "within_budget": self.within_budget,
            "chosen": self.chosen,
        }


@dataclass(frozen=True)
class PruneResult:
    """What :func:`prune_model` did. ``model`` is the output: pruned only if ``met_budget``."""

    model: nn.Module
    met_budget: bool
    reason: str
    settings: PruneSettings
    spec: ModelSpec
    history: tuple[tuple[str, bool, tuple[int, ...]], ...]  # empty when the output is unpruned
    base_accuracy: float
    comparison: Comparison | None  # base vs the chosen candidate (None if none was found)
    trials: tuple[Trial, ...]
    quantization: tuple[QuantVariant, ...] = ()
    onnx_path: Path | None = None  # ONNX of the output model (quantized if that was kept)
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def pruned(self) -> bool:
        return bool(self.history)

    def to_json(self) -> dict[str, Any]:
        comp = self.comparison
        versions = package_versions("onnxruntime", "torch", "torch-pruning")
        return {
            "format": REPORT_FORMAT,
            "met_budget": self.met_budget,
            "pruned": self.pruned,
            "reason": self.reason,
            "model": self.spec.to_json(),
            "settings": self.settings.to_json(),
            "base_accuracy": round(self.base_accuracy, 4),
            "comparison": comp.to_json() if comp else None,
            "output_onnx": self.onnx_path.name if self.onnx_path else None,
            "quantization": [q.to_json() for q in self.quantization],
            "trials": [t.to_json() for t in self.trials],
            "measurement": {
                "runtime": f"onnxruntime {versions['onnxruntime']}",
                "torch": versions["torch"],
                "torch_pruning": versions["torch-pruning"],
                "threads": comp.latency.threads if comp else 1,
                "rounds": comp.latency.rounds if comp else 0,
                "method": "ONNX Runtime CPU, graph optimization ALL, 1 intra-op thread, "
                          "warm-up, interleaved rounds with alternating order, median of "
                          "per-round medians; base and candidate exported alike",
                "accuracy_data": "evaluation (test) data; the budget is checked on it",
            },
            "notes": list(self.notes),
        }



