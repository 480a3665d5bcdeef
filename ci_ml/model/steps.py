"""The train and prune pipeline steps."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ci_ml.artifacts import CANDIDATE_DIR
from ci_ml.config import Config
from ci_ml.data.loader import load_data
from ci_ml.errors import ConfigError
from ci_ml.fsutil import atomic_write_json
from ci_ml.model.layout import (
    HISTORY,
    METRICS,
    MODEL_DIR,
    TRAIN_OUTPUTS,
    ZOO_INPUT_RANKS,
    model_spec,
    user_code_files,
)
from ci_ml.model.run_manifest import package_versions
from ci_ml.pipeline.interface import Step, StepContext, StepInputs, StepOutcome, StepStatus

# torch is imported inside the steps' methods: a fully cached run never pays for it.


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


PRUNED_DIR = CANDIDATE_DIR
PRUNE_REPORT = "prune-report.json"
PRUNE_PLOT = "prune-tradeoff.png"


class PruneStep(Step):
    """Prune within the accuracy budget and export the model that will be served to ONNX.

    The export always runs (``pruned/`` is what ``serve`` and ``deploy`` ship); pruning
    itself is governed by ``prune.enabled``. When pruning cannot help (the budget cannot be
    met, or the model cannot be traced) the unpruned model is the output, with a warning.
    """

    name = "prune"
    title = "prune, export to ONNX, parity check"
    after = ("train",)
    # 3: pruned/metrics.json (the shipped model's own metrics) joined the outputs.
    version = "3"

    def preflight(self, config: Config) -> None:
        from ci_ml.model.prune.settings import PruneSettings

        PruneSettings.from_config(config.section("prune"))

    def inputs(self, ctx: StepContext) -> StepInputs:
        c = ctx.config
        data = c.section("data")
        return StepInputs(
            files=(c.resolve(data["train"]), c.resolve(data["test"])),
            config={"prune": dict(c.section("prune")), "data": dict(data)},
            tools=package_versions("torch", "onnx", "onnxruntime", "onnxscript", "torch-pruning"),
        )

    def outputs(self, config: Config) -> tuple[str, ...]:
        return (PRUNED_DIR, PRUNE_REPORT, PRUNE_PLOT)

    def run(self, ctx: StepContext) -> StepOutcome:
        import shutil

        from ci_ml.errors import InputError
        from ci_ml.model.export import export_onnx, onnx_files
        from ci_ml.model.persist import SPEC, load_model, save_model
        from ci_ml.model.prune.persist import save_pruned
        from ci_ml.model.prune.report import write_prune_report
        from ci_ml.model.prune.search import prune_model
        from ci_ml.model.prune.settings import PruneSettings
        from ci_ml.model.train import evaluate_model

        section = ctx.config.section("prune")
        model, card = load_model(ctx.artifact(MODEL_DIR))
        out = ctx.output(PRUNED_DIR)
        out.mkdir(parents=True, exist_ok=True)
        onnx_out = out / "model.onnx"

        def unpruned(reason: str) -> StepOutcome:
            save_model(model, card, out)
            export = export_onnx(model, card.spec.input_shape, onnx_out)
            atomic_write_json(ctx.output(PRUNE_REPORT), {
                "pruned": False, "met_budget": False, "reason": reason,
                "served": {"onnx_bytes": export.bytes_total, "accuracy": None},
            })
            return StepOutcome(StepStatus.PASSED, f"not pruned ({reason}); exported the "
                               f"unpruned model ({export.bytes_total} bytes)", {"pruned": False})

        if not section["enabled"]:
            return unpruned("prune.enabled is false")
        bundle = load_data(ctx.config)
        train, test = bundle.split("train"), bundle.split("test")
        work = ctx.staging / ".prune-work"
        try:
            result = prune_model(model, card.spec, (train.x, train.y), (test.x, test.y),
                                 PruneSettings.from_config(section), ctx.reporter.info,
                                 work_dir=work)
        except InputError as exc:
            ctx.reporter.warn(f"prune: {exc.message}; keeping the unpruned model")
            return unpruned(exc.message)
        if result.pruned:
            save_pruned(result.model, result.history, out, spec=card.spec)
            atomic_write_json(out / SPEC, card.to_json())
        else:
            save_model(result.model, card, out)
        # The gate and the registry judge the model that ships, so it gets its own metrics.
        atomic_write_json(out / METRICS, {"model": "pruned" if result.pruned else "trained",
                                          **evaluate_model(result.model, test, bundle.classes)})
        assert result.onnx_path is not None
        for src in onnx_files(result.onnx_path):
            # The served file is always model.onnx (its external data keeps its own name).
            dest = onnx_out if src == result.onnx_path else out / src.name
            shutil.copy2(src, dest)
        write_prune_report(result, ctx.staging)
        report = json.loads(ctx.output(PRUNE_REPORT).read_text("utf-8"))
        report["served"] = _served_stats(result)
        atomic_write_json(ctx.output(PRUNE_REPORT), report)
        shutil.rmtree(work, ignore_errors=True)
        if not result.met_budget:
            ctx.reporter.warn(f"prune: {result.reason}; keeping the unpruned model")
        comp = result.comparison
        summary = (comp.verdict if comp is not None and result.pruned
                   else f"not pruned: {result.reason}")
        return StepOutcome(StepStatus.PASSED, summary,
                           {"pruned": result.pruned, "met_budget": result.met_budget})


def _served_stats(result: Any) -> dict[str, Any]:
    """The numbers of the model that is served (pruned or not), as the gate's limits read them."""
    comp = result.comparison
    if comp is None:
        return {"onnx_bytes": None, "accuracy": round(result.base_accuracy, 4)}
    stats = comp.candidate if result.pruned else comp.base
    return {
        "onnx_bytes": stats.onnx.bytes_total,
        "params": stats.params,
        "macs": stats.macs,
        "accuracy": round(stats.accuracy, 4),
        "accuracy_drop": round(comp.accuracy_drop, 4) if result.pruned else 0.0,
        "latency_ms": {f"b{b}": round(us / 1000.0, 6) for b, us in sorted(stats.latency_us.items())},
    }


def served_metrics_path(out_dir: Path) -> Path:
    """The metrics of the model that ships: the pruned one's if prune wrote them."""
    pruned = out_dir / PRUNED_DIR / METRICS
    return pruned if pruned.is_file() else out_dir / METRICS


def read_metrics(out_dir: Path) -> dict[str, object]:
    path = out_dir / METRICS
    return json.loads(path.read_text("utf-8")) if path.is_file() else {}
