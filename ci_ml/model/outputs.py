"""Everything a training run writes, in one place for one process and for DDP's rank 0."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from ci_ml.config import Config
from ci_ml.data.loader import DataBundle
from ci_ml.data.reference import prediction_reference
from ci_ml.fsutil import atomic_write_json, sha256_file
from ci_ml.model import plots
from ci_ml.model.card import (
    REFERENCE,
    REGRESSION,
    InputBinding,
    ModelCard,
    OutputBinding,
    fields_from_schema,
)
from ci_ml.model.export import INPUT_NAME, OUTPUT_NAME
from ci_ml.model.layout import (
    CURVE_PNG,
    HISTORY,
    METRICS,
    MODEL_DIR,
    RUN_MANIFEST,
    user_code_files,
)
from ci_ml.model.persist import WEIGHTS, save_model
from ci_ml.model.records import (
    data_record,
    headline,
    reference_profile,
    skipped_rows,
    write_eval_plot,
)
from ci_ml.model.run_manifest import build_manifest
from ci_ml.model.train import TrainResult, TrainSettings, predict
from ci_ml.model.zoo import ModelSpec


def zoo_card(bundle: DataBundle, spec: ModelSpec) -> ModelCard:
    """The card of a model trained by ci-ml's loop on ``bundle``: encoded input, ONNX names
    as ``ci_ml.model.export`` writes them."""
    regression = bundle.task == REGRESSION
    fields = fields_from_schema(bundle.schema.features)
    return ModelCard(
        task=bundle.task, classes=bundle.classes, fields=fields,
        inputs=(InputBinding(INPUT_NAME, "float32", tuple(f.name for f in fields), True,
                             bundle.input_shape),),
        outputs=OutputBinding(OUTPUT_NAME, "value" if regression else "logits"),
        preprocessing=bundle.preprocessor, target=bundle.schema.target,
        target_scale=(bundle.target_mean, bundle.target_std) if regression else None,
        spec_json=spec.to_json(),
        scale=bundle.scale, mean=bundle.mean, std=bundle.std)


def write_train_outputs(output: Callable[[str], Path], config: Config, bundle: DataBundle,
                        settings: TrainSettings, result: TrainResult, world_size: int,
                        exclude: Sequence[Path] = ()) -> dict[str, Any]:
    """Write model/, metrics.json, train-history.json, train-run.json and the plots.

    ``output(rel)`` gives the path to write ``rel`` at (a step's staging directory).
    Returns the manifest.
    """
    card = zoo_card(bundle, result.spec)
    model_dir = output(MODEL_DIR)
    save_model(result.model, card, model_dir)
    test = bundle.split("test")
    raw, classes_idx = predict(result.model, test.x)
    if bundle.task == REGRESSION:
        values = test.target_mean + raw.reshape(len(raw), -1)[:, 0] * test.target_std
        prediction = prediction_reference(REGRESSION, values=np.asarray(values))
    else:
        prediction = prediction_reference(bundle.task, [bundle.classes[i] for i in classes_idx])
    atomic_write_json(model_dir / REFERENCE, reference_profile(bundle, prediction))
    weights_sha256 = sha256_file(model_dir / WEIGHTS)
    metrics = {"model": "trained", "task": bundle.task, **result.metrics,
               **skipped_rows(bundle)}
    atomic_write_json(output(METRICS), metrics)
    atomic_write_json(output(HISTORY), {
        "best_epoch": result.best_epoch, "stopped_early": result.stopped_early,
        "epochs": [asdict(e) for e in result.history],
    })
    regression = bundle.task == REGRESSION
    plots.training_curve(result.history, output(CURVE_PNG), result.best_epoch,
                         title=f"{config.project_name}: {result.spec.name}",
                         regression=regression)
    write_eval_plot(output, bundle.task, result.metrics, bundle.classes)
    manifest = build_manifest(
        config=config, data=data_record(config, bundle), code_files=user_code_files(config),
        settings=asdict(settings), world_size=world_size, threads=settings.threads,
        seed=settings.seed, spec=result.spec.to_json(), weights_sha256=weights_sha256,
        result={**headline(result.metrics), "epochs_run": len(result.history),
                "best_epoch": result.best_epoch, "stopped_early": result.stopped_early},
        exclude=exclude,
    )
    atomic_write_json(output(RUN_MANIFEST), manifest)
    return manifest
