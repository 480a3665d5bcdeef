"""Structured (channel) pruning with an accuracy budget, measured in ONNX Runtime.

Recipe (why each part is there, with measurements: ``docs/pruning.md``):

* torch-pruning's ``DependencyGraph`` finds the coupled layers (a conv's output channels,
  its BatchNorm, the next layer's input channels) so whole channels leave the model and
  its tensors really shrink. The output layer is never pruned.
* Channels are ranked by group L2 magnitude and removed iteratively, a slice at a time,
  with a few epochs of fine-tuning after each slice: accuracy collapses right after
  pruning a CNN and recovers with fine-tuning.
* Final widths are rounded to a multiple of ``round_to`` (16): ONNX Runtime's CPU
  convolutions work on channel blocks of 8 or 16 (NCHWc), and a width that is not a
  multiple of the block is measurably slower than the next larger multiple.
* Two ways to set the target: a fixed ``ratio``, or a ``target_speedup`` for which the
  ladder of ratios is walked (each rung pruned further from the last, then fine-tuned and
  measured) and the most aggressive rung still within ``max_accuracy_drop`` is kept.
* Every candidate is exported the same way as the base model (dynamo exporter, BatchNorm
  folded, dynamic batch axis) and timed against it, interleaved, in ONNX Runtime with one
  thread. Speedups are measured, never inferred from parameter or MAC counts.
* Optional int8 dynamic quantization is kept only when it is measurably faster.
* If the budget cannot be met, the unpruned model is the output and the result says why.

Persistence is pickle-free: torch-pruning's ``pruning_history()`` as JSON plus the weights
as safetensors; loading rebuilds the base model from its spec and replays the history.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
import torch_pruning as tp
from torch import nn

from ci_ml.errors import ConfigError, InputError, ToolError
from ci_ml.model.bench import LatencyReport, measure_latency
from ci_ml.model.export import ExportResult, Parity, check_parity, export_onnx, run_onnx
from ci_ml.model.zoo import ModelSpec, build_model, count_macs, count_params

Data = tuple[np.ndarray, np.ndarray]
Progress = Callable[[str], None]

HISTORY_FILE = "pruning-history.json"
WEIGHTS_FILE = "model.safetensors"
REPORT_FILE = "prune-report.json"
PLOT_FILE = "prune-tradeoff.png"
HISTORY_FORMAT = "ci-ml/pruning-history/1"
REPORT_FORMAT = "ci-ml/prune-report/1"

#: below this many times faster, a "speedup" is within what noise and layout can explain.
REAL_SPEEDUP = 1.2
#: a quantized variant must beat the float model by this factor at every batch size.
QUANT_MIN_GAIN = 1.05
#: a quantized variant must agree with the float model's argmax on this share of inputs.
QUANT_MIN_AGREEMENT = 0.99

_PRUNABLE = (nn.modules.conv._ConvNd, nn.Linear)
_QUANT_MODES = ("auto", "off", "on")


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class PruneSettings:
    """What to prune for, from the ``prune`` section of the config.

    Give ``ratio`` (share of channels removed from each prunable layer) or
    ``target_speedup`` (times faster at batch ``speedup_batch`` in ONNX Runtime); with
    neither, ``ratio`` is 0.5. ``max_accuracy_drop`` is in percentage points.
    """

    ratio: float | None = None
    target_speedup: float | None = None
    max_accuracy_drop: float = 1.0
    steps: int = 4
    finetune_epochs: int = 3
    quantize: str = "auto"
    round_to: int = 16
    learning_rate: float = 1e-3
    batch_size: int = 64
    seed: int = 0
    max_ratio: float = 0.9
    search_step: float = 0.125
    latency_batches: tuple[int, ...] = (1, 256)
    speedup_batch: int = 1
    latency_rounds: int = 15

    def __post_init__(self) -> None:
        def bad(key: str, why: str) -> ConfigError:
            return ConfigError(f"prune.{key}: {why}")

        if self.ratio is not None and self.target_speedup is not None:
            raise ConfigError("prune: set either ratio or target_speedup, not both")
        if self.ratio is not None and not 0.0 < self.ratio < 1.0:
            raise bad("ratio", f"must be between 0 and 1 (exclusive), got {self.ratio}")
        if self.target_speedup is not None and not self.target_speedup > 1.0:
            raise bad("target_speedup", f"must be greater than 1, got {self.target_speedup}")
        if not self.max_accuracy_drop >= 0.0:
            raise bad("max_accuracy_drop", f"must be >= 0 percentage points, got "
                      f"{self.max_accuracy_drop}")
        if self.steps < 1:
            raise bad("steps", f"must be >= 1, got {self.steps}")
        if self.finetune_epochs < 0:
            raise bad("finetune_epochs", f"must be >= 0, got {self.finetune_epochs}")
        if self.quantize not in _QUANT_MODES:
            raise bad("quantize",
                      f"must be one of {', '.join(_QUANT_MODES)}, got {self.quantize!r}")
        if self.round_to < 1:
            raise bad("round_to", f"must be >= 1, got {self.round_to}")
        if not self.learning_rate > 0:
            raise bad("learning_rate", f"must be > 0, got {self.learning_rate}")
        if self.batch_size < 1:
            raise bad("batch_size", f"must be >= 1, got {self.batch_size}")
        if not 0.0 < self.max_ratio < 1.0:
            raise bad("max_ratio", f"must be between 0 and 1 (exclusive), got {self.max_ratio}")
        if not 0.0 < self.search_step < 1.0:
            raise bad("search_step", f"must be between 0 and 1 (exclusive), got {self.search_step}")
        if not self.latency_batches or any(b < 1 for b in self.latency_batches):
            raise bad("latency_batches",
                      f"must be positive batch sizes, got {self.latency_batches}")
        if self.speedup_batch not in self.latency_batches:
            raise bad("speedup_batch", f"{self.speedup_batch} is not among latency_batches "
                      f"{list(self.latency_batches)}")
        if self.latency_rounds < 1:
            raise bad("latency_rounds", f"must be >= 1, got {self.latency_rounds}")

    @property
    def effective_ratio(self) -> float | None:
        """The fixed ratio to prune to, or None when searching for ``target_speedup``."""
        if self.target_speedup is not None:
            return None
        return 0.5 if self.ratio is None else self.ratio

    @classmethod
    def from_config(cls, section: Mapping[str, Any] | None) -> PruneSettings:
        """Build from the config's ``prune`` mapping; errors name the bad key."""
        section = dict(section or {})
        section.pop("enabled", None)  # the pipeline's switch, not a pruning setting
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(section) - known)
        if unknown:
            raise ConfigError(
                f"prune.{unknown[0]}: unknown key (known: {', '.join(sorted(known))})")
        kwargs: dict[str, Any] = {}
        for key, value in section.items():
            kwargs[key] = _coerce(key, value)
        return cls(**kwargs)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["latency_batches"] = list(self.latency_batches)
        return out


_FLOAT_KEYS = {"max_accuracy_drop", "learning_rate", "max_ratio", "search_step"}
_OPT_FLOAT_KEYS = {"ratio", "target_speedup"}
_INT_KEYS = {"steps", "finetune_epochs", "round_to", "batch_size", "seed", "speedup_batch",
             "latency_rounds"}


def _coerce(key: str, value: Any) -> Any:
    def is_num(v: Any) -> bool:
        return isinstance(v, int | float) and not isinstance(v, bool)

    if key in _OPT_FLOAT_KEYS:
        if value is None:
            return None
        if not is_num(value):
            raise ConfigError(f"prune.{key}: expected a number or null, got {value!r}")
        return float(value)
    if key in _FLOAT_KEYS:
        if not is_num(value):
            raise ConfigError(f"prune.{key}: expected a number, got {value!r}")
        return float(value)
    if key in _INT_KEYS:
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"prune.{key}: expected an integer, got {value!r}")
        return value
    if key == "quantize":
        if value is False:  # YAML's bare `off`
            return "off"
        if value is True:
            return "on"
        if not isinstance(value, str):
            raise ConfigError(f"prune.quantize: expected auto, off or on, got {value!r}")
        return value
    if key == "latency_batches":
        if not isinstance(value, list | tuple) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        ):
            raise ConfigError(f"prune.latency_batches: expected a list of integers, got {value!r}")
        return tuple(value)
    return value


# --------------------------------------------------------------------------- results


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
class QuantVariant:
    """An int8 dynamic quantization of the pruned ONNX model, as measured."""

    name: str
    op_types: tuple[str, ...]
    path: Path
    onnx_bytes: int
    latency_us: Mapping[int, float]
    gain: Mapping[int, float]  # float latency / quantized latency
    accuracy: float
    argmax_agreement: float  # with the float ONNX model
    kept: bool
    why: str

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "op_types": list(self.op_types),
            "file": self.path.name,
            "onnx_bytes": self.onnx_bytes,
            "latency_us": {str(b): round(v, 3) for b, v in sorted(self.latency_us.items())},
            "gain_over_float": {str(b): round(v, 3) for b, v in sorted(self.gain.items())},
            "accuracy": round(self.accuracy, 4),
            "argmax_agreement_with_float": self.argmax_agreement,
            "kept": self.kept,
            "why": self.why,
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
                "runtime": _ort_version(),
                "torch": torch.__version__,
                "torch_pruning": tp.__version__,
                "threads": comp.latency.threads if comp else 1,
                "rounds": comp.latency.rounds if comp else 0,
                "method": "ONNX Runtime CPU, graph optimization ALL, 1 intra-op thread, "
                          "warm-up, interleaved rounds with alternating order, median of "
                          "per-round medians; base and candidate exported alike",
                "accuracy_data": "evaluation (test) data; the budget is checked on it",
            },
            "notes": list(self.notes),
        }


def _ort_version() -> str:
    import onnxruntime

    return f"onnxruntime {onnxruntime.__version__}"


# --------------------------------------------------------------------------- data and training


def _check_data(name: str, data: Data, spec: ModelSpec) -> tuple[np.ndarray, np.ndarray]:
    try:
        x, y = data
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name}: expected a pair (x, y) of arrays") from exc
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    y = np.asarray(y).astype(np.int64)
    if x.ndim < 1 or tuple(x.shape[1:]) != tuple(spec.input_shape):
        raise InputError(f"{name}: x has shape {tuple(x.shape)}, expected (N, "
                         f"{', '.join(map(str, spec.input_shape))})")
    if len(x) != len(y) or len(x) == 0:
        raise InputError(f"{name}: {len(x)} inputs but {len(y)} labels")
    if y.min() < 0 or y.max() >= spec.num_classes:
        raise InputError(f"{name}: labels must lie in [0, {spec.num_classes - 1}]")
    return x, y


def _fit(model: nn.Module, x: np.ndarray, y: np.ndarray, *, epochs: int, lr: float,
         batch_size: int, seed: int) -> None:
    """A small deterministic fine-tuning loop (Adam, cross-entropy)."""
    if epochs <= 0:
        return
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    xs, ys = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(xs), generator=gen)
        for i in range(0, len(xs), batch_size):
            idx = perm[i : i + batch_size]
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(xs[idx]), ys[idx])
            loss.backward()
            opt.step()
    model.eval()


@torch.no_grad()
def _accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    model.eval()
    hits = 0
    for i in range(0, len(x), 1024):
        hits += int((model(torch.from_numpy(x[i : i + 1024])).argmax(1).numpy()
                     == y[i : i + 1024]).sum())
    return 100.0 * hits / len(x)


def _nonzero_params(model: nn.Module) -> int:
    return int(sum(int(torch.count_nonzero(p)) for p in model.parameters()))


# --------------------------------------------------------------------------- tracing and pruning


def _execution_order(model: nn.Module, example: torch.Tensor) -> list[nn.Module]:
    order: list[nn.Module] = []
    handles = [m.register_forward_hook(lambda mod, _i, _o: order.append(mod))
               for m in model.modules() if isinstance(m, _PRUNABLE)]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
    return order


class _ChannelPruner:
    """Removes channels through torch-pruning's dependency graph, recording history."""

    def __init__(self, model: nn.Module, input_shape: Sequence[int]) -> None:
        self.model = model.eval()
        self.example = torch.zeros(2, *input_shape)
        try:
            with torch.no_grad():
                out = model(self.example)
            if not isinstance(out, torch.Tensor):
                raise TypeError(f"forward returned {type(out).__name__}, not a tensor")
            self.out_shape = tuple(out.shape)
            order = _execution_order(model, self.example)
            with _quiet_logs():
                self.dg = tp.DependencyGraph().build_dependency(
                    model, example_inputs=self.example, verbose=False)
        except InputError:
            raise
        except Exception as exc:
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise InputError(f"the model cannot be traced for pruning: {type(exc).__name__}: "
                             f"{msg}"[:400]) from exc
        names = {m: n for n, m in model.named_modules()}
        untraced = [names[m] for m in model.modules()
                    if isinstance(m, _PRUNABLE) and m not in self.dg.module2node]
        if untraced:
            raise InputError(
                "the model cannot be traced for pruning: layer(s) "
                f"{', '.join(untraced[:5])} are not on the autograd path from input to output "
                "(no_grad, detach, .numpy() or .item() in forward?)")
        # The layer(s) producing the output keep their width: the output shape is fixed.
        ignored = [order[-1]] if order else []
        self.roots: list[nn.Module] = []
        for group in self.dg.get_all_groups(ignored_layers=ignored,
                                            root_module_types=list(_PRUNABLE)):
            self.roots.append(group[0].dep.target.module)
        rank = {m: i for i, m in enumerate(order)}
        self.roots.sort(key=lambda m: rank.get(m, len(rank)))
        if not self.roots:
            raise InputError("the model has no prunable channels: no Conv or Linear layer "
                             "besides the output layer is on the traced path")
        self.names = [names[m] for m in self.roots]
        self.original = [self._width(m) for m in self.roots]
        self.importance = tp.importance.GroupMagnitudeImportance(p=2)

    def _width(self, module: nn.Module) -> int:
        return int(self.dg.get_out_channels(module))

    @property
    def widths(self) -> tuple[int, ...]:
        return tuple(self._width(m) for m in self.roots)

    def target_widths(self, ratio: float, round_to: int | None) -> tuple[int, ...]:
        out = []
        for orig in self.original:
            keep = orig * (1.0 - ratio)
            if round_to and round_to > 1:
                if orig <= round_to:
                    want = orig
                else:
                    blocks = int(math.floor(keep / round_to + 0.5))
                    want = min(orig, max(round_to, blocks * round_to))
            else:
                want = max(1, int(math.floor(keep + 0.5)))
            out.append(want)
        return tuple(out)

    def prune_to(self, widths: Sequence[int]) -> bool:
        """Prune each root group to ``widths`` (lowest-importance channels go). Changed?"""
        changed = False
        for module, want in zip(self.roots, widths, strict=True):
            cur = self._width(module)
            if cur <= want:
                continue
            pruning_fn = self.dg.get_pruner_of_module(module).prune_out_channels
            group = self.dg.get_pruning_group(module, pruning_fn, list(range(cur)))
            scores = self.importance(group)
            if scores is None:
                continue
            idxs = torch.argsort(scores)[: cur - want].tolist()
            self.dg.get_pruning_group(module, pruning_fn, idxs).prune()
            changed = True
        try:
            with torch.no_grad():
                out = self.model(self.example)
        except Exception as exc:
            raise InputError(f"pruning broke the model's forward pass: {type(exc).__name__}: "
                             f"{exc}"[:400]) from exc
        if tuple(out.shape) != self.out_shape:
            raise InputError(f"pruning changed the model's output shape from {self.out_shape} "
                             f"to {tuple(out.shape)}; the output layer must not be pruned")
        return changed

    def history(self) -> tuple[tuple[str, bool, tuple[int, ...]], ...]:
        return _normalize_history(self.dg.pruning_history())


def _normalize_history(raw: Any) -> tuple[tuple[str, bool, tuple[int, ...]], ...]:
    out = []
    try:
        for name, is_out, idxs in raw:
            if not isinstance(name, str):
                raise TypeError("module name is not a string")
            seq = idxs.tolist() if isinstance(idxs, torch.Tensor) else list(idxs)
            out.append((name, bool(is_out), tuple(int(i) for i in seq)))
    except (TypeError, ValueError) as exc:
        raise InputError(f"malformed pruning history: {exc}") from exc
    return tuple(out)


@contextmanager
def _quiet_logs() -> Iterator[None]:
    root = logging.getLogger()
    old = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(old)


# --------------------------------------------------------------------------- measuring


def _stats(model: nn.Module, input_shape: Sequence[int], export: ExportResult,
           lat: LatencyReport, accuracy: float) -> ModelStats:
    stats = lat.of(export.path)
    return ModelStats(
        params=count_params(model),
        nonzero_params=_nonzero_params(model),
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
    base_acc = _accuracy(base, x, y) if base_accuracy is None else base_accuracy
    return Comparison(
        base=_stats(base, input_shape, base_export, lat, base_acc),
        candidate=_stats(candidate, input_shape, cand_export, lat, _accuracy(candidate, x, y)),
        parity=parity,
        latency=lat,
    )


def _quantize(src: Path, dst: Path, op_types: Sequence[str]) -> Path:
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as exc:  # pragma: no cover - onnxruntime is a dependency
        raise ToolError(f"onnxruntime.quantization is unavailable: {exc}") from exc
    dst.unlink(missing_ok=True)
    with _quiet_logs():
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8,
                         op_types_to_quantize=list(op_types))
    return dst


# --------------------------------------------------------------------------- the step


def prune_model(
    model: nn.Module,
    spec: ModelSpec,
    train_data: Data,
    test_data: Data,
    settings: PruneSettings,
    progress: Progress | None = None,
    *,
    work_dir: Path | None = None,
) -> PruneResult:
    """Prune ``model`` structurally within the accuracy budget and measure what it gained.

    ``train_data`` is used for fine-tuning, ``test_data`` for accuracy, the budget and the
    parity check; both are ``(x float32 (N, *input_shape), y int64 (N,))``. ONNX files
    (``base.onnx``, ``pruned.onnx``, quantized variants) are written to ``work_dir`` (a
    temporary directory if None, in which case ``onnx_path`` of the result is None).
    The input model is not modified. Raises :class:`InputError` if the model cannot be
    traced; an unmet budget is not an error: ``met_budget`` is False and ``model`` is the
    unpruned model.
    """
    if work_dir is None:
        with tempfile.TemporaryDirectory(prefix="ci-ml-prune-") as tmp:
            result = _prune(model, spec, train_data, test_data, settings, progress, Path(tmp))
            return replace(result, onnx_path=None)
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    return _prune(model, spec, train_data, test_data, settings, progress, work)


def _prune(
    model: nn.Module, spec: ModelSpec, train_data: Data, test_data: Data,
    settings: PruneSettings, progress: Progress | None, work: Path,
) -> PruneResult:
    say: Progress = progress or (lambda _msg: None)
    xtr, ytr = _check_data("train data", train_data, spec)
    xte, yte = _check_data("test data", test_data, spec)
    s = settings
    shape = spec.input_shape

    base = copy.deepcopy(model).eval()
    work_model = copy.deepcopy(base)
    pruner = _ChannelPruner(work_model, shape)  # InputError if untraceable
    base_acc = _accuracy(base, xte, yte)
    floor = base_acc - s.max_accuracy_drop
    say(f"prune: base model accuracy {base_acc:.2f}%, budget {s.max_accuracy_drop} points "
        f"(>= {floor:.2f}%)")
    base_export = export_onnx(base, shape, work / "base.onnx")
    trial_dir = work / "trials"
    trial_dir.mkdir(exist_ok=True)

    def finetune(step_seed: int) -> None:
        _fit(work_model, xtr, ytr, epochs=s.finetune_epochs, lr=s.learning_rate,
             batch_size=s.batch_size, seed=s.seed + step_seed)

    def within(acc: float) -> bool:
        return base_acc - acc <= s.max_accuracy_drop + 1e-9

    trials: list[Trial] = []
    best: tuple[nn.Module, tuple[Any, ...], float, int] | None = None  # model, history, ratio, i
    notes: list[str] = []
    ratio = s.effective_ratio
    if ratio is not None:
        final = pruner.target_widths(ratio, s.round_to)
        for step in range(1, s.steps + 1):
            if step < s.steps:
                widths = tuple(round(o - (o - f) * step / s.steps)
                               for o, f in zip(pruner.original, final, strict=True))
            else:
                widths = final
            pruner.prune_to(widths)
            finetune(step)
            say(f"prune: step {step}/{s.steps} widths {list(pruner.widths)} accuracy "
                f"{_accuracy(work_model, xte, yte):.2f}%")
        acc = _accuracy(work_model, xte, yte)
        # Measured even if over budget: the report shows what the ratio would have bought.
        best = (copy.deepcopy(work_model), pruner.history(), ratio, 0)
        trials.append(_trial(pruner, work_model, shape, ratio, acc, base_acc, within(acc), {}))
    else:
        ladder = _ladder(pruner, s)
        if not ladder:
            raise InputError("the model's layers are too narrow to prune with "
                             f"round_to={s.round_to}")
        say(f"prune: searching ratios {', '.join(f'{r:.3f}' for r in ladder)} for "
            f"{s.target_speedup}x at batch {s.speedup_batch}")
        for i, r in enumerate(ladder):
            pruner.prune_to(pruner.target_widths(r, s.round_to))
            finetune(i + 1)
            acc = _accuracy(work_model, xte, yte)
            ok = within(acc)
            exp = export_onnx(work_model, shape, trial_dir / f"ratio-{r:.3f}.onnx")
            lat = measure_latency([base_export.path, exp.path], s.latency_batches,
                                  input_shape=shape, rounds=max(3, s.latency_rounds // 3))
            speed = {b: lat.speedup(base_export.path, exp.path, b) for b in s.latency_batches}
            cpu_speed = {b: lat.cpu_speedup(base_export.path, exp.path, b)
                         for b in s.latency_batches}
            trials.append(replace(
                _trial(pruner, work_model, shape, r, acc, base_acc, ok, speed,
                       onnx_bytes=exp.bytes_total), cpu_speedup=cpu_speed))
            say(f"prune: ratio {r:.3f} widths {list(pruner.widths)} accuracy {acc:.2f}% "
                "speedup (wall/CPU) " + ", ".join(f"{v:.2f}x/{cpu_speed[b]:.2f}x@{b}"
                                                  for b, v in speed.items())
                + ("" if ok else " (over budget, stopping)"))
            if not ok:
                break
            best = (copy.deepcopy(work_model), pruner.history(), r, len(trials) - 1)

    if best is None:
        t = trials[0]
        reason = (f"even the mildest setting tried (ratio {t.ratio:.3f}) costs "
                  f"{t.accuracy_drop:.2f} accuracy points, more than max_accuracy_drop "
                  f"{s.max_accuracy_drop}; kept the unpruned model. Try more "
                  "prune.finetune_epochs or a larger max_accuracy_drop")
        say(f"prune: {reason}")
        return PruneResult(model=base, met_budget=False, reason=reason, settings=s, spec=spec,
                           history=(), base_accuracy=base_acc, comparison=None,
                           trials=tuple(trials), onnx_path=base_export.path)

    chosen, history, chosen_ratio, chosen_idx = best
    accuracy_ok = trials[chosen_idx].within_budget
    if accuracy_ok:
        trials[chosen_idx] = replace(trials[chosen_idx], chosen=True)

    # Quantized variants of the chosen model join the final, thorough measurement.
    quant_specs: list[tuple[str, tuple[str, ...]]] = []
    if not accuracy_ok:
        pass
    elif s.quantize == "on":
        quant_specs = [("int8-matmul", ("MatMul", "Gemm"))]
    elif s.quantize == "auto":
        quant_specs = [("int8-matmul", ("MatMul", "Gemm")),
                       ("int8-all", ("Conv", "MatMul", "Gemm"))]
    pruned_onnx = work / "pruned.onnx"
    cand_export = export_onnx(chosen, shape, pruned_onnx)
    quant_paths = [_quantize(cand_export.path, work / f"pruned.{name}.onnx", ops)
                   for name, ops in quant_specs]
    say("prune: measuring base vs pruned" + (" and int8 variants" if quant_paths else "")
        + f" ({s.latency_rounds} interleaved rounds, 1 thread)")
    comp = compare_models(base, chosen, shape, (xte, yte), work,
                          batch_sizes=s.latency_batches, rounds=s.latency_rounds,
                          base_export=base_export, candidate_export=cand_export,
                          base_accuracy=base_acc,
                          extra_onnx=quant_paths)
    if s.effective_ratio is not None:
        trials[chosen_idx] = replace(
            trials[chosen_idx], speedup=comp.speedups,
            cpu_speedup={b: comp.cpu_speedup(b) for b in comp.speedups},
            onnx_bytes=comp.candidate.onnx.bytes_total)

    variants = _judge_quantization(comp, quant_specs, quant_paths, xte, yte, floor,
                                   forced=s.quantize == "on")
    kept_q = [v for v in variants if v.kept]
    output_onnx = comp.candidate.onnx.path
    if kept_q:
        fastest = min(kept_q, key=lambda v: v.latency_us[s.speedup_batch])
        output_onnx = fastest.path
        variants = tuple(
            v if v is fastest or not v.kept
            else replace(v, kept=False, why=v.why + "; a faster variant was kept")
            for v in variants
        )

    main_speed = comp.sure_speedup(s.speedup_batch)
    drop = comp.accuracy_drop
    met = True
    if not accuracy_ok:
        met = False
        reason = (f"pruning ratio {chosen_ratio} costs {drop:.2f} accuracy points "
                  f"({base_acc:.2f}% -> {comp.candidate.accuracy:.2f}%), more than "
                  f"max_accuracy_drop {s.max_accuracy_drop}; kept the unpruned model. Try a "
                  "smaller prune.ratio, more prune.finetune_epochs or a larger "
                  "max_accuracy_drop")
    elif not comp.parity.ok:
        met = False
        reason = (f"ONNX Runtime parity failed for the pruned model (max abs diff "
                  f"{comp.parity.max_abs_diff:.3g} > {comp.parity.atol:g} or argmax agreement "
                  f"{comp.parity.argmax_agreement:.2%}); kept the unpruned model")
    elif s.target_speedup is not None and main_speed < s.target_speedup:
        met = False
        reason = (f"the most aggressive setting within the {s.max_accuracy_drop}-point budget "
                  f"(ratio {chosen_ratio:.3f}, widths {list(trials[chosen_idx].widths)}) is "
                  f"{main_speed:.2f}x faster at batch {s.speedup_batch}, short of "
                  f"target_speedup {s.target_speedup}; kept the unpruned model. A target of at "
                  f"most {math.floor(main_speed * 10) / 10:.1f} would pass, or allow a larger "
                  "max_accuracy_drop")
    else:
        reason = (f"ratio {chosen_ratio:.3f} (widths {list(trials[chosen_idx].widths)}): "
                  + ", ".join(f"{comp.sure_speedup(b):.2f}x faster at batch {b}"
                              for b in comp.speedups)
                  + f", {comp.size_ratio:.2f}x smaller; accuracy {comp.candidate.accuracy:.2f}% "
                  f"({-drop:+.2f} points, budget -{s.max_accuracy_drop})")
    if not comp.real_speedup:
        notes.append(comp.verdict)
    say(f"prune: {reason}")
    if not met:
        return PruneResult(model=base, met_budget=False, reason=reason, settings=s, spec=spec,
                           history=(), base_accuracy=base_acc, comparison=comp,
                           trials=tuple(trials), quantization=variants,
                           onnx_path=base_export.path, notes=tuple(notes))
    return PruneResult(model=chosen, met_budget=True, reason=reason, settings=s, spec=spec,
                       history=history, base_accuracy=base_acc, comparison=comp,
                       trials=tuple(trials), quantization=variants, onnx_path=output_onnx,
                       notes=tuple(notes))


def _ladder(pruner: _ChannelPruner, s: PruneSettings) -> list[float]:
    """Ratios to walk, mildest first, skipping those that give the same widths."""
    out: list[float] = []
    seen = {tuple(pruner.original)}
    k = 1
    while k * s.search_step <= s.max_ratio + 1e-9:
        r = round(k * s.search_step, 6)
        widths = pruner.target_widths(r, s.round_to)
        if widths not in seen:
            seen.add(widths)
            out.append(r)
        k += 1
    return out


def _trial(pruner: _ChannelPruner, model: nn.Module, shape: Sequence[int], ratio: float,
           acc: float, base_acc: float, ok: bool, speed: Mapping[int, float],
           onnx_bytes: int = 0) -> Trial:
    return Trial(ratio=ratio, widths=pruner.widths, params=count_params(model),
                 macs=count_macs(model, shape), onnx_bytes=onnx_bytes, accuracy=acc,
                 accuracy_drop=base_acc - acc, speedup=dict(speed), within_budget=ok)


def _judge_quantization(
    comp: Comparison, specs: Sequence[tuple[str, tuple[str, ...]]], paths: Sequence[Path],
    x: np.ndarray, y: np.ndarray, floor: float, *, forced: bool,
) -> tuple[QuantVariant, ...]:
    if not paths:
        return ()
    float_lat, float_cpu = comp.candidate.latency_us, comp.candidate.cpu_us
    float_out = run_onnx(comp.candidate.onnx.path, x)
    out = []
    for (name, ops), path in zip(specs, paths, strict=True):
        lat = {b: st.median_us for b, st in comp.latency.of(path).items()}
        cpu = {b: st.cpu_median_us for b, st in comp.latency.of(path).items()}
        # Both clocks must agree that it is faster (see ci_ml.model.bench).
        gain = {b: min(float_lat[b] / lat[b], float_cpu[b] / cpu[b]) for b in lat}
        q_out = run_onnx(path, x)
        acc = 100.0 * float(np.mean(q_out.argmax(1) == y))
        agree = float(np.mean(q_out.argmax(1) == float_out.argmax(1)))
        size = sum(f.stat().st_size for f in (path,))
        gains = ", ".join(f"{v:.2f}x at batch {b}" for b, v in gain.items())
        if acc < floor - 1e-9:
            kept, why = False, f"accuracy {acc:.2f}% is below the budget floor {floor:.2f}%"
        elif agree < QUANT_MIN_AGREEMENT:
            kept, why = False, f"agrees with the float model on only {agree:.1%} of inputs"
        elif forced:
            kept, why = True, f"quantize: on ({gains} vs float)"
        elif min(gain.values()) >= QUANT_MIN_GAIN:
            kept, why = True, f"measurably faster: {gains} vs float"
        else:
            kept, why = False, f"not measurably faster: {gains} vs float"
        out.append(QuantVariant(name=name, op_types=ops, path=path, onnx_bytes=size,
                                latency_us=lat, gain=gain, accuracy=acc, argmax_agreement=agree,
                                kept=kept, why=why))
    return tuple(out)


# --------------------------------------------------------------------------- persistence


def save_pruned(
    model: nn.Module,
    history: Sequence[Sequence[Any]],
    directory: Path,
    *,
    spec: ModelSpec | None = None,
) -> tuple[Path, Path]:
    """Write ``pruning-history.json`` and ``model.safetensors`` (no pickle) to ``directory``."""
    from safetensors.torch import save_model

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    hist = _normalize_history(history)
    doc = {
        "format": HISTORY_FORMAT,
        "torch_pruning": tp.__version__,
        "spec": spec.to_json() if spec else None,
        "history": [[name, is_out, list(idxs)] for name, is_out, idxs in hist],
    }
    hist_path = directory / HISTORY_FILE
    hist_path.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    weights = directory / WEIGHTS_FILE
    save_model(model, str(weights), metadata={"format": HISTORY_FORMAT})
    return hist_path, weights


def load_pruned(spec: ModelSpec, directory: Path, project_dir: Path | None = None) -> nn.Module:
    """Rebuild the base model from ``spec``, replay the pruning history, load the weights."""
    from safetensors.torch import load_model

    directory = Path(directory)
    hist_path, weights = directory / HISTORY_FILE, directory / WEIGHTS_FILE
    for f in (hist_path, weights):
        if not f.is_file():
            raise InputError(f"pruned model: {f} is missing")
    try:
        doc = json.loads(hist_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"pruned model: cannot read {hist_path}: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != HISTORY_FORMAT:
        raise InputError(f"pruned model: {hist_path} is not a {HISTORY_FORMAT} file")
    saved_spec = doc.get("spec")
    if saved_spec is not None and ModelSpec.from_json(saved_spec) != spec:
        raise InputError(f"pruned model: {hist_path} was saved for model "
                         f"{saved_spec.get('name')!r} {saved_spec}, not for {spec.to_json()}")
    history = _normalize_history(doc.get("history"))
    model = build_model(spec, project_dir).eval()
    if history:
        try:
            with _quiet_logs():
                dg = tp.DependencyGraph().build_dependency(
                    model, example_inputs=torch.zeros(2, *spec.input_shape), verbose=False)
                dg.load_pruning_history([[n, o, list(i)] for n, o, i in history])
        except Exception as exc:
            raise InputError(f"pruned model: cannot replay the pruning history on "
                             f"{spec.name!r}: {type(exc).__name__}: {exc}"[:400]) from exc
    try:
        load_model(model, str(weights), strict=True)
    except Exception as exc:
        raise InputError(f"pruned model: weights in {weights} do not fit the pruned "
                         f"architecture: {exc}"[:400]) from exc
    return model.eval()


# --------------------------------------------------------------------------- report


def write_prune_report(result: PruneResult, out_dir: Path) -> tuple[Path, Path]:
    """Write ``prune-report.json`` and ``prune-tradeoff.png`` to ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = out_dir / REPORT_FILE
    report.write_text(json.dumps(result.to_json(), indent=2) + "\n", encoding="utf-8")
    plot = out_dir / PLOT_FILE
    _plot_tradeoff(result, plot)
    return report, plot


def _plot_tradeoff(result: PruneResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = result.settings
    batches = list(s.latency_batches)
    fig, axes = plt.subplots(1, len(batches), figsize=(5.2 * len(batches), 4.2), dpi=110,
                             squeeze=False)
    floor = result.base_accuracy - s.max_accuracy_drop
    accs = [t.accuracy for t in result.trials] + [result.base_accuracy, floor]
    for ax, b in zip(axes[0], batches, strict=True):
        ax.scatter([1.0], [result.base_accuracy], marker="s", color="black", zorder=3,
                   label="base (unpruned)")
        pts = [t for t in result.trials if b in t.speedup]
        x = {id(t): t.sure_speedup[b] for t in pts}
        ok = [t for t in pts if t.within_budget]
        over = [t for t in pts if not t.within_budget]
        if ok:
            ax.scatter([x[id(t)] for t in ok], [t.accuracy for t in ok], color="tab:green",
                       zorder=3, label="tried, within budget")
        if over:
            ax.scatter([x[id(t)] for t in over], [t.accuracy for t in over],
                       color="tab:red", marker="x", zorder=3, label="tried, over budget")
        for k, t in enumerate(pts):
            ax.annotate(f"{t.ratio:.2f}", (x[id(t)], t.accuracy), fontsize=7,
                        textcoords="offset points", xytext=(4, 5 if k % 2 == 0 else -11))
            if t.chosen:
                ax.scatter([x[id(t)]], [t.accuracy], s=260, facecolors="none",
                           edgecolors="tab:blue", linewidths=1.8, zorder=4, label="chosen")
        ax.axhline(floor, color="tab:red", ls="--", lw=1,
                   label=f"budget: -{s.max_accuracy_drop} points")
        if s.target_speedup and b == s.speedup_batch:
            ax.axvline(s.target_speedup, color="tab:blue", ls=":", lw=1,
                       label=f"target {s.target_speedup}x")
        ax.set_xlabel(f"ONNX Runtime speedup at batch {b} (x, 1 thread; "
                      "lower of wall / CPU)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_ylim(min(accs) - 0.4, max(accs) + 0.3)
        ax.grid(alpha=0.3)
    legend: dict[str, Any] = {}
    for ax in axes[0]:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(label, handle)
    fig.legend(list(legend.values()), list(legend), loc="lower center", ncol=len(legend),
               fontsize=7, frameon=False)
    status = "met" if result.met_budget else "NOT met"
    fig.suptitle(f"Pruning trade-off: accuracy vs speedup per pruning ratio (budget {status})",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path)
    plt.close(fig)
