"""The train and prune pipeline steps."""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path
from typing import TYPE_CHECKING

from ci_ml.config import Config
from ci_ml.data.loader import load_data
from ci_ml.errors import ConfigError
from ci_ml.fsutil import atomic_write_json, iter_files
from ci_ml.pipeline.interface import Step, StepContext, StepInputs, StepOutcome, StepStatus

if TYPE_CHECKING:
    from ci_ml.model.zoo import ModelSpec

# torch is imported inside the steps' methods: a fully cached run never pays for it.
MODEL_DIR = "model"
# Input rank each zoo model needs (None: any), checked before a run without importing torch.
ZOO_INPUT_RANKS: dict[str, int | None] = {"mlp": None, "cnn": 3}
METRICS = "metrics.json"
HISTORY = "train-history.json"


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


def package_versions(*names: str) -> dict[str, str]:
    out = {}
    for n in names:
        try:
            out[n] = importlib.metadata.version(n)
        except importlib.metadata.PackageNotFoundError:
            out[n] = "missing"
    return out


class TrainStep(Step):
    name = "train"
    title = "reproducible PyTorch training"
    after = ("data-check",)

    def preflight(self, config: Config) -> None:
        bundle = load_data(config)
        name = str(config.section("model")["name"])
        if ":" in name:
            # A user's factory can only be checked by building it (this imports torch).
            from ci_ml.model.zoo import build_model

            build_model(model_spec(config, bundle.input_shape, len(bundle.classes)), config.root)
        elif name not in ZOO_INPUT_RANKS:
            raise ConfigError(f"model.name: unknown zoo model {name!r} (zoo: "
                              f"{', '.join(ZOO_INPUT_RANKS)}; or use 'package.module:factory')")
        elif ZOO_INPUT_RANKS[name] not in (None, len(bundle.input_shape)):
            raise ConfigError(f"model.input_shape: model {name!r} needs "
                              f"{ZOO_INPUT_RANKS[name]} dimensions [channels, height, width], "
                              f"got {list(bundle.input_shape)}")

    def inputs(self, ctx: StepContext) -> StepInputs:
        c = ctx.config
        data = c.section("data")
        return StepInputs(
            files=(c.resolve(data["train"]), c.resolve(data["test"]), *user_code_files(c)),
            config={"data": dict(data), "model": dict(c.section("model")),
                    "train": dict(c.section("train"))},
            tools=package_versions("torch", "numpy"),
        )

    def outputs(self, config: Config) -> tuple[str, ...]:
        return (MODEL_DIR, METRICS, HISTORY)

    def run(self, ctx: StepContext) -> StepOutcome:
        from ci_ml.model.persist import ModelCard, save_model
        from ci_ml.model.train import TrainSettings, train_model

        c = ctx.config
        bundle = load_data(c)
        spec = model_spec(c, bundle.input_shape, len(bundle.classes))
        settings = TrainSettings.from_config(c.section("train"))

        def progress(epoch: int, total: int, text: str) -> None:
            ctx.reporter.progress("epoch", epoch, total, text)

        result = train_model(bundle, spec, settings, progress, c.root)
        card = ModelCard(spec, bundle.classes, bundle.scale, bundle.train.features,
                         bundle.mean, bundle.std)
        save_model(result.model, card, ctx.output(MODEL_DIR))
        atomic_write_json(ctx.output(METRICS), {"model": "trained", **result.metrics})
        atomic_write_json(ctx.output(HISTORY), {
            "best_epoch": result.best_epoch, "stopped_early": result.stopped_early,
            "epochs": [e.__dict__ for e in result.history],
        })
        acc = result.metrics["accuracy"]
        return StepOutcome(StepStatus.PASSED, f"test accuracy {acc:.4f}",
                           {"accuracy": acc, "epochs": len(result.history)})


class PruneStep(Step):
    """Export (and, once configured, prune) the trained model to ONNX for serving."""

    name = "prune"
    title = "prune, export to ONNX, parity check"
    after = ("train",)

    def enabled(self, config: Config) -> bool:
        return True  # export always runs; pruning itself is governed by prune.enabled

    def inputs(self, ctx: StepContext) -> StepInputs:
        c = ctx.config
        data = c.section("data")
        return StepInputs(
            files=(c.resolve(data["train"]), c.resolve(data["test"])),
            config={"prune": dict(c.section("prune"))},
            tools=package_versions("torch", "onnx", "onnxruntime", "torch-pruning"),
        )

    def outputs(self, config: Config) -> tuple[str, ...]:
        return ("pruned", "prune-report.json")

    def run(self, ctx: StepContext) -> StepOutcome:
        import torch

        from ci_ml.model.persist import load_model, save_model

        model, card = load_model(ctx.artifact(MODEL_DIR))
        out = ctx.output("pruned")
        out.mkdir(parents=True, exist_ok=True)
        save_model(model, card, out)
        onnx_path = out / "model.onnx"
        torch.onnx.export(model, (torch.zeros(1, *card.spec.input_shape),), str(onnx_path),
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                          dynamo=False)
        size = sum(p.stat().st_size for p in iter_files(out) if p.name.startswith("model.onnx"))
        atomic_write_json(ctx.output("prune-report.json"),
                          {"pruned": False, "onnx_bytes": size, "note": "export only"})
        return StepOutcome(StepStatus.PASSED, f"exported ONNX ({size} bytes)", {})


def read_metrics(out_dir: Path) -> dict[str, object]:
    path = out_dir / METRICS
    return json.loads(path.read_text("utf-8")) if path.is_file() else {}
