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
COMMAND_LOG = "train-command.log"
CURVE_PNG = "plots/training-curve.png"
CONFUSION_PNG = "plots/confusion-matrix.png"
PREDICTED_PNG = "plots/predicted-vs-actual.png"
TRAIN_OUTPUTS = (MODEL_DIR, METRICS, HISTORY, RUN_MANIFEST, CURVE_PNG, CONFUSION_PNG,
                 PREDICTED_PNG, COMMAND_LOG)


def model_spec(config: Config, input_shape: tuple[int, ...], num_classes: int) -> ModelSpec:
    """The zoo spec; ``num_classes`` 0 (a regression target has no classes) gives the model
    a regression head: one output."""
    from ci_ml.model.zoo import ModelSpec

    model = config.section("model")
    regression = num_classes == 0
    return ModelSpec(name=str(model["name"]), input_shape=input_shape,
                     num_classes=1 if regression else num_classes, params=dict(model["params"]),
                     task="regression" if regression else "classification")


def data_files(config: Config) -> tuple[Path, ...]:
    """The data a model is trained and judged on: both splits and the schema, if one is set."""
    data = config.section("data")
    files = [config.resolve(str(data["train"])), config.resolve(str(data["test"]))]
    if data.get("schema"):
        files.append(config.resolve(str(data["schema"])))
    return tuple(files)


def user_code_files(config: Config) -> tuple[Path, ...]:
    """A ``module:factory`` model makes the project's own Python sources training inputs."""
    name = str(config.section("model").get("name", ""))
    if ":" not in name:
        return ()
    module = name.split(":")[0].split(".")[0]
    hits = []
    for base in (config.root, config.root / "src"):
        for candidate in (base / module, base / f"{module}.py"):
            if candidate.exists():
                hits.append(candidate)
    return tuple(hits)
