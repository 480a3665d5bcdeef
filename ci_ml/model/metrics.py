"""Classification and regression metrics from predictions: pure numpy, the same for train,
evaluate and prune."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ci_ml.errors import InputError

if TYPE_CHECKING:
    from ci_ml.data.loader import Table
    from ci_ml.model.card import ModelCard
    from ci_ml.model.inference import Prediction


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


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray,
                       sample: int = 500) -> dict[str, Any]:
    """r2, rmse, mae (and mse as ``loss``) in the target's units, plus up to ``sample``
    (actual, predicted) pairs for the report's predicted-vs-actual plot."""
    y = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    err = p - y
    mse = float(np.mean(err ** 2)) if y.size else 0.0
    total = float(np.sum((y - y.mean()) ** 2)) if y.size else 0.0
    # A constant target has no variance to explain: r2 is 1 for a perfect fit, else 0.
    r2 = 1.0 - float(np.sum(err ** 2)) / total if total > 0 else (1.0 if mse == 0 else 0.0)
    step = max(1, -(-y.size // sample))
    return {
        "r2": round(r2, 6),
        "rmse": round(float(np.sqrt(mse)), 6),
        "mae": round(float(np.mean(np.abs(err))), 6) if y.size else 0.0,
        "loss": round(mse, 6),
        "max_error": round(float(np.max(np.abs(err))), 6) if y.size else 0.0,
        "samples": int(y.size),
        "target_mean": round(float(y.mean()), 6) if y.size else 0.0,
        "target_std": round(float(y.std()), 6) if y.size else 0.0,
        "predicted_vs_actual": {"actual": [round(float(v), 6) for v in y[::step]],
                                "predicted": [round(float(v), 6) for v in p[::step]]},
    }


def score_predictions(pred: Prediction, card: ModelCard, table: Table) -> dict[str, Any]:
    """Metrics of predictions against the split's targets, as metrics.json has them."""
    if card.task == "classification":
        index = {c: i for i, c in enumerate(card.classes)}
        unknown = sorted(set(table.labels) - set(index))
        if unknown:
            raise InputError(f"data.test label {unknown[0]!r} is not one of the model's "
                             f"{len(card.classes)} classes")
        y = np.array([index[label] for label in table.labels], dtype=np.int64)
        y_pred = np.array([index.get(label, -1) for label in pred.labels], dtype=np.int64)
        if (y_pred < 0).any():
            raise InputError(f"the model predicts a label outside its card's classes "
                             f"({', '.join(card.classes[:6])})")
        loss = None
        if pred.probabilities is not None:
            p_true = pred.probabilities[np.arange(len(y)), y]
            loss = float(-np.mean(np.log(np.clip(p_true, 1e-12, 1.0))))
        return classification_metrics(y, y_pred, card.classes, loss=loss)
    assert pred.values is not None
    actual = np.array([float(v) for v in table.labels])
    return regression_metrics(actual, pred.values)
