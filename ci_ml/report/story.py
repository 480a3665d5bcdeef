"""The run's story for the reports: every step's evidence as plain values, worded once.

``summary.md`` and ``report.html`` both tell it, with the sentences made here, so the
two say the same thing. Only the JSON and PNG files the steps left under ``--out`` are
read: no torch, no matplotlib (the gate's core install has neither).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ci_ml.artifacts import CANDIDATE_DIR

SHORT = 12


def short(digest: str | None) -> str:
    """12 hex digits of a ``sha256:`` digest: what a person compares; the full one on hover."""
    return digest.removeprefix("sha256:")[:SHORT] if digest else "none"


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None


def _png(path: Path) -> str | None:
    try:
        return base64.b64encode(path.read_bytes()).decode("ascii")
    except OSError:
        return None


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    value: float | None
    threshold: float | None
    message: str
    column: str | None = None


@dataclass(frozen=True)
class DataStory:
    checks: tuple[Check, ...]
    rows: Mapping[str, int]

    @property
    def failed(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if not c.passed)

    @property
    def sentence(self) -> str:
        rows = ", ".join(f"{n} {split}" for split, n in self.rows.items())
        head = f"{len(self.checks) - len(self.failed)} of {len(self.checks)} data checks passed"
        tail = f" on {rows} rows" if rows else ""
        if self.failed:
            return head + tail + "; failed: " + ", ".join(c.name for c in self.failed)
        return head + tail


@dataclass(frozen=True)
class Epoch:
    epoch: int
    train_loss: float
    val_loss: float | None
    val_accuracy: float | None


@dataclass(frozen=True)
class TrainingStory:
    epochs: tuple[Epoch, ...]
    best_epoch: int | None
    stopped_early: bool
    metrics: Mapping[str, Any]                   # the trained model's metrics.json
    curve_png: str | None = None
    confusion_png: str | None = None

    @property
    def confusion(self) -> list[list[int]] | None:
        matrix = self.metrics.get("confusion_matrix")
        if isinstance(matrix, list) and all(isinstance(r, list) for r in matrix):
            return [[int(v) for v in row] for row in matrix]
        return None

    @property
    def classes(self) -> list[str]:
        per_class = self.metrics.get("per_class")
        if isinstance(per_class, Mapping):
            return [str(k) for k in per_class]
        matrix = self.confusion or []
        return [str(i) for i in range(len(matrix))]

    @property
    def sentence(self) -> str:
        acc = _num(self.metrics.get("accuracy"))
        parts = [f"trained {len(self.epochs)} epoch{'s' if len(self.epochs) != 1 else ''}"]
        if self.best_epoch:
            parts.append(f"best epoch {self.best_epoch}" + (" (stopped early)"
                                                           if self.stopped_early else ""))
        if acc is not None:
            parts.append(f"test accuracy {acc:.4f}")
        r2, rmse = _num(self.metrics.get("r2")), _num(self.metrics.get("rmse"))
        if r2 is not None:
            parts.append(f"test r2 {r2:.4f}" + (f", rmse {rmse:.4g}" if rmse is not None else ""))
        return "Training: " + ", ".join(parts)


@dataclass(frozen=True)
class PruneRow:
    label: str
    base: str
    candidate: str
    gain: str


@dataclass(frozen=True)
class PruneStory:
    model: str                                   # pruned | unpruned: which is the candidate
    why: str
    rows: tuple[PruneRow, ...] = ()
    speedups: Mapping[int, tuple[float, float]] = field(default_factory=dict)  # wall, CPU
    plot_png: str | None = None

    @property
    def sentence(self) -> str:
        return f"Candidate: the {self.model} model ({self.why})"


@dataclass(frozen=True)
class Story:
    data: DataStory | None
    training: TrainingStory | None
    pruning: PruneStory | None


def data_story(report: Any) -> DataStory | None:
    if not isinstance(report, Mapping) or not isinstance(report.get("checks"), list):
        return None
    checks = []
    for c in report["checks"]:
        if not isinstance(c, Mapping):
            continue
        column = c.get("column") or (c.get("details") or {}).get("column")
        checks.append(Check(str(c.get("name", "?")), bool(c.get("passed")), _num(c.get("value")),
                            _num(c.get("threshold")), str(c.get("message", "")),
                            str(column) if column else None))
    rows: Mapping[str, Any] = report["rows"] if isinstance(report.get("rows"), Mapping) else {}
    return DataStory(tuple(checks), {str(k): int(v) for k, v in rows.items()
                                     if isinstance(v, int)})


def training_story(out_dir: Path) -> TrainingStory | None:
    history, metrics = _json(out_dir / "train-history.json"), _json(out_dir / "metrics.json")
    if not isinstance(history, Mapping) and not isinstance(metrics, Mapping):
        return None
    epochs: list[Epoch] = []
    for e in (history or {}).get("epochs") or []:
        loss = _num(e.get("train_loss")) if isinstance(e, Mapping) else None
        if loss is not None:
            epochs.append(Epoch(int(e.get("epoch", len(epochs) + 1)), loss,
                                _num(e.get("val_loss")), _num(e.get("val_accuracy"))))
    best = (history or {}).get("best_epoch")
    return TrainingStory(tuple(epochs), int(best) if isinstance(best, int) else None,
                         bool((history or {}).get("stopped_early")),
                         metrics if isinstance(metrics, Mapping) else {},
                         _png(out_dir / "plots" / "training-curve.png"),
                         _png(out_dir / "plots" / "confusion-matrix.png"))


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}{unit}" if abs(value) >= 100 else f"{value:.4g}{unit}"


def prune_story(report: Any, out_dir: Path | None = None) -> PruneStory | None:
    """Base against the candidate, per batch size, from ``prune-report.json``."""
    if not isinstance(report, Mapping):
        return None
    block: Mapping[str, Any] = (report["candidate"] if isinstance(report.get("candidate"), Mapping)
                                else {})
    pruned = bool(block.get("model") == "pruned" if block else report.get("pruned"))
    model = "pruned" if pruned else "unpruned"
    why = str(block.get("why") or report.get("reason") or "")
    plot = _png(out_dir / "prune-tradeoff.png") if out_dir else None
    comp = report.get("comparison")
    if not isinstance(comp, Mapping):
        return PruneStory(model, why, plot_png=plot)
    base: Mapping[str, Any] = comp.get("base") or {}
    cand: Mapping[str, Any] = comp.get("candidate") or {}
    rows: list[PruneRow] = []

    def row(label: str, b: float | None, c: float | None, unit: str = "",
            higher_is_better: bool = False) -> None:
        if b is None and c is None:
            return
        gain = "-"
        if b and c:
            gain = f"{(c / b if higher_is_better else b / c):.2f}x"
        rows.append(PruneRow(label, _fmt(b, unit), _fmt(c, unit), gain))

    row("parameters", _num(base.get("params")), _num(cand.get("params")))
    row("multiply-accumulates", _num(base.get("macs")), _num(cand.get("macs")))
    row("ONNX size (bytes)", _num(base.get("onnx_bytes")), _num(cand.get("onnx_bytes")))
    speedups: dict[int, tuple[float, float]] = {}
    ratios: Mapping[str, Any] = comp.get("ratios") or {}
    for b in sorted((base.get("latency_us") or {}), key=int):
        row(f"latency at batch {b} (µs)", _num((base.get("latency_us") or {}).get(b)),
            _num((cand.get("latency_us") or {}).get(b)))
        wall = _num((ratios.get("speedup") or {}).get(b))
        cpu = _num((ratios.get("cpu_speedup") or {}).get(b))
        if wall is not None and cpu is not None:
            speedups[int(b)] = (wall, cpu)
    b_acc, c_acc = _num(base.get("accuracy")), _num(cand.get("accuracy"))
    if b_acc is not None and c_acc is not None:
        rows.append(PruneRow("test accuracy (%)", f"{b_acc:.2f}", f"{c_acc:.2f}",
                             f"{c_acc - b_acc:+.2f} points"))
    return PruneStory(model, why, tuple(rows), speedups, plot)


def read_story(out_dir: Path, data_report: Any = None, prune_report: Any = None) -> Story:
    return Story(data_story(data_report if data_report is not None
                            else _json(out_dir / "data-report.json")),
                 training_story(out_dir),
                 prune_story(prune_report if prune_report is not None
                             else _json(out_dir / "prune-report.json"), out_dir))


def candidate_files(out_dir: Path) -> list[str]:
    """The candidate's files under --out, as the reports list them."""
    root = out_dir / CANDIDATE_DIR
    return sorted(p.relative_to(out_dir).as_posix() for p in root.rglob("*") if p.is_file()) \
        if root.is_dir() else []


def curve_points(values: Sequence[float | None], width: float, height: float,
                 low: float, high: float) -> str:
    """SVG polyline points for ``values`` spread over ``width`` (None: skipped)."""
    span = (high - low) or 1.0
    step = width / max(len(values) - 1, 1)
    return " ".join(f"{i * step:.1f},{height - (v - low) / span * height:.1f}"
                    for i, v in enumerate(values) if v is not None)
