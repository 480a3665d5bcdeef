"""What a training run records beside the model, torch-free: the metrics' headline, the data
it saw, the reference profile for monitoring, the evaluation plot.

ci-ml's own loop (``outputs.py``) and a project's train.command (``byo.py``) both write
these; the latter runs where torch is not installed (the ``[evaluate]`` extra).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ci_ml.config import Config
from ci_ml.data.loader import DataBundle
from ci_ml.data.reference import build_reference
from ci_ml.model import plots
from ci_ml.model.card import REGRESSION
from ci_ml.model.layout import CONFUSION_PNG, PREDICTED_PNG


def reference_profile(bundle: DataBundle, prediction: Mapping[str, Any]) -> dict[str, Any]:
    schema = bundle.schema
    return build_reference(bundle.profiles, schema.features, schema.target_column, prediction,
                           {"path": bundle.train.path.name, "sha256": bundle.train.sha256},
                           bundle.task)


def write_eval_plot(output: Callable[[str], Path], task: str, metrics: Mapping[str, Any],
                    classes: Sequence[str]) -> None:
    """The test set at a glance: predicted vs actual (regression) or the confusion matrix."""
    if task == REGRESSION:
        pairs = metrics["predicted_vs_actual"]
        plots.predicted_vs_actual(pairs["actual"], pairs["predicted"], output(PREDICTED_PNG))
    else:
        plots.confusion_matrix(metrics["confusion_matrix"], classes, output(CONFUSION_PNG))


def headline(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The few numbers a run manifest and a step summary show."""
    keys = ("r2", "rmse", "mae", "loss") if "r2" in metrics else ("accuracy", "macro_f1", "loss")
    return {k: metrics.get(k) for k in keys}


def skipped_rows(bundle: DataBundle) -> dict[str, Any]:
    dropped = {"train": bundle.train.dropped, "test": bundle.test.dropped}
    return {"rows_without_target": dropped} if any(dropped.values()) else {}


def data_record(config: Config, bundle: DataBundle) -> dict[str, Any]:
    return {
        split: {"path": _relative(table.path, config.root), "sha256": table.sha256,
                "rows": table.rows, "features": len(table.features),
                "rows_without_target": table.dropped}
        for split, table in (("train", bundle.train), ("test", bundle.test))
    }


def _relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.resolve().as_posix()
