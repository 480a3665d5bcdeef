"""Everything a training run writes, in one place for one process and for DDP's rank 0."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ci_ml.config import Config
from ci_ml.data.loader import DataBundle
from ci_ml.fsutil import atomic_write_json, sha256_file
from ci_ml.model import plots
from ci_ml.model.layout import (
    CONFUSION_PNG,
    CURVE_PNG,
    HISTORY,
    METRICS,
    MODEL_DIR,
    RUN_MANIFEST,
    user_code_files,
)
from ci_ml.model.persist import WEIGHTS, ModelCard, save_model
from ci_ml.model.run_manifest import build_manifest
from ci_ml.model.train import TrainResult, TrainSettings


def write_train_outputs(output: Callable[[str], Path], config: Config, bundle: DataBundle,
                        settings: TrainSettings, result: TrainResult, world_size: int,
                        exclude: Sequence[Path] = ()) -> dict[str, Any]:
    """Write model/, metrics.json, train-history.json, train-run.json and the plots.

    ``output(rel)`` gives the path to write ``rel`` at (a step's staging directory).
    Returns the manifest.
    """
    card = ModelCard(result.spec, bundle.classes, bundle.scale, bundle.train.features,
                     bundle.mean, bundle.std)
    model_dir = output(MODEL_DIR)
    save_model(result.model, card, model_dir)
    weights_sha256 = sha256_file(model_dir / WEIGHTS)
    metrics = {"model": "trained", **result.metrics}
    atomic_write_json(output(METRICS), metrics)
    atomic_write_json(output(HISTORY), {
        "best_epoch": result.best_epoch, "stopped_early": result.stopped_early,
        "epochs": [asdict(e) for e in result.history],
    })
    plots.training_curve(result.history, output(CURVE_PNG), result.best_epoch,
                         title=f"{config.project_name}: {result.spec.name}")
    plots.confusion_matrix(result.metrics["confusion_matrix"], bundle.classes,
                           output(CONFUSION_PNG))
    data = {
        split: {"path": _relative(table.path, config.root), "sha256": table.sha256,
                "rows": len(table.labels), "features": len(table.features)}
        for split, table in (("train", bundle.train), ("test", bundle.test))
    }
    manifest = build_manifest(
        config=config, data=data, code_files=user_code_files(config),
        settings=asdict(settings), world_size=world_size, threads=settings.threads,
        seed=settings.seed, spec=result.spec.to_json(), weights_sha256=weights_sha256,
        result={"accuracy": result.metrics["accuracy"], "macro_f1": result.metrics["macro_f1"],
                "loss": result.metrics.get("loss"), "epochs_run": len(result.history),
                "best_epoch": result.best_epoch, "stopped_early": result.stopped_early},
        exclude=exclude,
    )
    atomic_write_json(output(RUN_MANIFEST), manifest)
    return manifest


def _relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.resolve().as_posix()
