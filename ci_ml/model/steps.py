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
    # 2: train-run.json and plots/ joined the outputs; old entries lack them.
    version = "2"

    def preflight(self, config: Config) -> None:
        name = str(config.section("model")["name"])
        bundle = load_data(config)
        # Cheap, torch-free checks first: they give the clearest messages.
        if ":" not in name:
            if name not in ZOO_INPUT_RANKS:
                raise ConfigError(f"model.name: unknown zoo model {name!r} (zoo: "
                                  f"{', '.join(ZOO_INPUT_RANKS)}; or use 'package.module:factory')")
            rank = ZOO_INPUT_RANKS[name]
            if rank not in (None, len(bundle.input_shape)):
                raise ConfigError(f"model.input_shape: model {name!r} needs {rank} dimensions "
                                  f"[channels, height, width], got {list(bundle.input_shape)}")

        from ci_ml.model.train import TrainSettings, check_fits, make_deterministic
        from ci_ml.model.zoo import build_model

        settings = TrainSettings.from_config(config.section("train"))
        settings.check()
        spec = model_spec(config, bundle.input_shape, len(bundle.classes))
        make_deterministic(settings.seed, settings.threads)
        check_fits(build_model(spec, config.root), bundle.split("train").x, spec)

    def inputs(self, ctx: StepContext) -> StepInputs:
        c = ctx.config
        data = c.section("data")
        return StepInputs(
            files=(c.resolve(data["train"]), c.resolve(data["test"]), *user_code_files(c)),
            # train includes nproc: DDP's smaller per-rank batches give other weights.
            config={"data": dict(data), "model": dict(c.section("model")),
                    "train": dict(c.section("train"))},
            tools=package_versions("torch", "numpy", "safetensors"),
        )

    def outputs(self, config: Config) -> tuple[str, ...]:
        return TRAIN_OUTPUTS

    def run(self, ctx: StepContext) -> StepOutcome:
        from ci_ml.model.outputs import write_train_outputs
        from ci_ml.model.train import TrainSettings, train_model

        c = ctx.config
        settings = TrainSettings.from_config(c.section("train"))
        exclude = (ctx.out_dir, c.resolve(str(c.section("cache")["dir"])))

        def progress(epoch: int, total: int, text: str) -> None:
            ctx.reporter.progress("epoch", epoch, total, text)

        if settings.nproc > 1:
            from ci_ml.model.distributed import launch

            ctx.staging.mkdir(parents=True, exist_ok=True)
            launch(c, settings.nproc, ctx.staging, exclude, progress)
            metrics = json.loads(ctx.output(METRICS).read_text("utf-8"))
            history = json.loads(ctx.output(HISTORY).read_text("utf-8"))
            acc, epochs = float(metrics["accuracy"]), len(history["epochs"])
        else:
            bundle = load_data(c)
            spec = model_spec(c, bundle.input_shape, len(bundle.classes))
            result = train_model(bundle, spec, settings, progress, c.root)
            write_train_outputs(ctx.output, c, bundle, settings, result, 1, exclude)
            acc, epochs = float(result.metrics["accuracy"]), len(result.history)
        where = f" on {settings.nproc} processes" if settings.nproc > 1 else ""
        return StepOutcome(StepStatus.PASSED, f"test accuracy {acc:.4f}{where}",
                           {"accuracy": acc, "epochs": epochs, "nproc": settings.nproc})


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
