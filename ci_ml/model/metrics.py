"""Classification metrics from predictions: pure numpy, the same for train, evaluate and prune."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def classification_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str], loss: float | None = None
) -> dict[str, Any]:
    n = len(classes)
    cm = confusion_matrix(y_true, y_pred, n)
    tp = np.diag(cm).astype(np.float64)
    predicted = cm.sum(axis=0).astype(np.float64)
    actual = cm.sum(axis=1).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(actual > 0, tp / actual, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    per_class = {
        str(c): {"precision": round(float(p), 6), "recall": round(float(r), 6),
                 "f1": round(float(f), 6), "support": int(s)}
        for c, p, r, f, s in zip(classes, precision, recall, f1, actual, strict=True)
    }
    out: dict[str, Any] = {
        "accuracy": round(float(tp.sum() / max(cm.sum(), 1)), 6),
        "macro_precision": round(float(precision.mean()), 6),
        "macro_recall": round(float(recall.mean()), 6),
        "macro_f1": round(float(f1.mean()), 6),
        "samples": int(cm.sum()),
        "per_class": per_class,
        "confusion_matrix": cm.tolist(),
    }
    if loss is not None:
        out["loss"] = round(float(loss), 6)
    return out
