"""Training-curve, confusion-matrix and predicted-vs-actual PNGs (matplotlib's Agg backend, no pyplot).

Using ``Figure`` with an Agg canvas directly touches no global pyplot state and
needs no display. PNG metadata that changes between runs (the matplotlib
version stamp) is dropped so that the same history draws the same bytes here;
byte identity is not promised across machines and nothing relies on it (the train
step is cached by its inputs, not by its outputs).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:   # torch-free at run time: a train.command project plots without torch
    from ci_ml.model.train import EpochStats

DPI = 100
_PNG_METADATA: dict[str, str | None] = {"Software": None}


def _save(fig: object, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    assert isinstance(fig, Figure)
    FigureCanvasAgg(fig)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=DPI, metadata=_PNG_METADATA)


def training_curve(history: Sequence[EpochStats], path: Path, best_epoch: int | None = None,
                   title: str = "training", regression: bool = False) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4), layout="constrained")
    loss_ax = fig.add_subplot(1, 1, 1)
    epochs = [h.epoch for h in history]
    loss_ax.plot(epochs, [h.train_loss for h in history], marker="o", ms=3, label="train loss")
    loss_ax.plot(epochs, [h.val_loss for h in history], marker="o", ms=3, label="validation loss")
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("squared error (standardized target)" if regression
                       else "cross-entropy loss")
    score = "r2" if regression else "accuracy"
    acc_ax = loss_ax.twinx()
    acc_ax.plot(epochs, [h.val_accuracy for h in history], color="tab:green", ls="--",
                label=f"validation {score}")
    acc_ax.set_ylabel(score)
    if not regression:
        acc_ax.set_ylim(0.0, 1.02)
    if best_epoch and best_epoch < len(history):  # early stopping kept an earlier epoch
        loss_ax.axvline(best_epoch, color="grey", ls=":", lw=1, label=f"kept epoch {best_epoch}")
    handles = loss_ax.get_legend_handles_labels()[0] + acc_ax.get_legend_handles_labels()[0]
    loss_ax.legend(handles=handles, loc="center right", fontsize="small")
    loss_ax.set_title(title)
    loss_ax.grid(alpha=0.3)
    _save(fig, path)


def confusion_matrix(matrix: Sequence[Sequence[int]], classes: Sequence[str], path: Path,
                     title: str = "confusion matrix (test set)") -> None:
    from matplotlib.figure import Figure

    n = len(classes)
    size = min(4.0 + 0.4 * n, 14.0)
    fig = Figure(figsize=(size, size * 0.9), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(image, ax=ax, shrink=0.8)
    labels = [str(c) for c in classes]
    ax.set_xticks(range(n), labels, rotation=90 if n > 12 else 0)
    ax.set_yticks(range(n), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if n <= 30:  # counts stay legible up to about 30 classes
        peak = max((max(row) for row in matrix), default=0)
        for i, row in enumerate(matrix):
            for j, count in enumerate(row):
                if count:
                    ax.text(j, i, str(count), ha="center", va="center", fontsize="small",
                            color="white" if count > peak / 2 else "black")
    _save(fig, path)


def predicted_vs_actual(actual: Sequence[float], predicted: Sequence[float], path: Path,
                        title: str = "predicted vs actual (test set)") -> None:
    """A regression model's test predictions against the truth, with the y = x line."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 5), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    ax.scatter(actual, predicted, s=10, alpha=0.6)
    both = [*actual, *predicted]
    if both:
        low, high = min(both), max(both)
        ax.plot([low, high], [low, high], color="grey", ls="--", lw=1, label="predicted = actual")
        ax.legend(loc="upper left", fontsize="small")
    ax.set_xlabel("actual")
    ax.set_ylabel("predicted")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    _save(fig, path)
