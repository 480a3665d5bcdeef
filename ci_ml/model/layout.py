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


def uses_command(config: Config) -> bool:
    """The project trains with its own script (``train.command``), not ci-ml's loop."""
    return bool(config.section("train").get("command"))


def training_requirements(config: Config) -> tuple[tuple[str, str], ...]:
    """The requirement files the CI train job installs beside ci-ml, as (path relative to the
    project, the config key that names it).

    ``train.requirements`` when set (``[]``: none). Unset, a ``train.command`` project
    installs what its dependency scan audits (``scan.deps.requirements``, when that scan is
    on): the files that vouch for the environment are the ones that build it. ci-ml's own
    loop needs nothing beyond the ``[train]`` extra.
    """
    declared = config.section("train").get("requirements")
    if declared is not None:
        return tuple((str(p), "train.requirements") for p in declared)
    deps = config.section("scan")["deps"]
    if uses_command(config) and deps["enabled"]:
        return tuple((str(p), "scan.deps.requirements") for p in deps["requirements"])
    return ()


def requirement_files(config: Config) -> tuple[Path, ...]:
    """:func:`training_requirements` as existing files (a missing one is a config error)."""
    from ci_ml.errors import ConfigError

    files = []
    for raw, key in training_requirements(config):
        path = config.resolve(raw)
        if not path.is_file():
            raise ConfigError(f"{key}: {raw} is not a file in the project ({path})")
        files.append(path)
    return tuple(files)
