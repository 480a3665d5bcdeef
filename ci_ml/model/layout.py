"""What training reads from the project and writes under ``--out``: names shared, torch-free.

The train step, the writer of its outputs and every DDP rank use these; keeping them
apart from the steps means no module of ``ci_ml.model`` imports the step module back.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ci_ml.artifacts import TRAINED_DIR
from ci_ml.config import Config

if TYPE_CHECKING:
    from ci_ml.model.zoo import ModelSpec

MODEL_DIR = TRAINED_DIR
# Input rank each zoo model needs (None: any), checked before a run without importing torch.
ZOO_INPUT_RANKS: dict[str, int | None] = {"mlp": None, "cnn": 3}
METRICS = "metrics.json"
HISTORY = "train-history.json"
RUN_MANIFEST = "train-run.json"
CURVE_PNG = "plots/training-curve.png"
CONFUSION_PNG = "plots/confusion-matrix.png"
TRAIN_OUTPUTS = (MODEL_DIR, METRICS, HISTORY, RUN_MANIFEST, CURVE_PNG, CONFUSION_PNG)


def model_spec(config: Config, input_shape: tuple[int, ...], num_classes: int) -> ModelSpec:
    from ci_ml.model.zoo import ModelSpec

    model = config.section("model")
    return ModelSpec(name=str(model["name"]), input_shape=input_shape, num_classes=num_classes,
                     params=dict(model["params"]))


def user_code_files(config: Config) -> tuple[Path, ...]:
    """A ``module:factory`` model makes the project's own Python sources training inputs."""
    name = str(config.section("model")["name"])
    if ":" not in name:
        return ()
    module = name.split(":")[0].split(".")[0]
    hits = []
    for base in (config.root, config.root / "src"):
        for candidate in (base / module, base / f"{module}.py"):
            if candidate.exists():
                hits.append(candidate)
    return tuple(hits)
