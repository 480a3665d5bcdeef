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
    RUN_MANIFEST,
    TRAIN_OUTPUTS,
    ZOO_INPUT_RANKS,
    data_files,
    model_spec,
    requirement_files,
    user_code_files,
    uses_command,
)
from ci_ml.model.run_manifest import package_versions
from ci_ml.pipeline.interface import Step, StepContext, StepInputs, StepOutcome, StepStatus

# torch is imported inside the steps' methods: a fully cached run never pays for it.


def summary_line(metrics: dict[str, Any]) -> str:
    if "r2" in metrics:
        return f"test r2 {float(metrics['r2']):.4f}, rmse {float(metrics['rmse']):.4g}"
    return f"test accuracy {float(metrics['accuracy']):.4f}"


class TrainStep(Step):
    name = "train"
    title = "training (PyTorch, or the project's train.command)"
    after = ("data-check",)
    extra = "train"
    # 2: train-run.json and plots/ joined the outputs; old entries lack them.
    version = "2"

    @classmethod
    def extra_for(cls, config: Config) -> str | None:
        # The team's script trains; ci-ml only runs the ONNX model it leaves on the data.
        return "evaluate" if uses_command(config) else cls.extra

    def preflight(self, config: Config) -> None:
        from ci_ml.model import byo

        bundle = load_data(config)
        if uses_command(config):
            byo.settings(config)
            byo.code_inputs(config, ())
            requirement_files(config)
            return
        name = str(config.section("model").get("name", ""))
        if not name:
            raise ConfigError("model.name: missing (a zoo model, 'package.module:factory', or "
                              "set train.command to train with the project's own script)")
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

    def _exclude(self, ctx: StepContext) -> tuple[Path, ...]:
        return (ctx.out_dir, ctx.config.resolve(str(ctx.config.section("cache")["dir"])))

    def inputs(self, ctx: StepContext) -> StepInputs:
        from ci_ml.model import byo

        c = ctx.config
        sections = {"data": dict(c.section("data")), "model": dict(c.section("model")),
                    "train": dict(c.section("train"))}
        if uses_command(c):
            # The team's code and its packages decide the model: both are in the key.
            return StepInputs(files=(*data_files(c), *byo.code_inputs(c, self._exclude(ctx))),
                              config=sections, tools={"environment": byo.environment_digest()})
        return StepInputs(
            files=(*data_files(c), *user_code_files(c)),
            # train includes nproc: DDP's smaller per-rank batches give other weights.
            config=sections,
            tools=package_versions("torch", "numpy", "safetensors"),
        )

    def outputs(self, config: Config) -> tuple[str, ...]:
        return TRAIN_OUTPUTS

    def run(self, ctx: StepContext) -> StepOutcome:
        if uses_command(ctx.config):
            return self._run_command(ctx)
        from ci_ml.model.outputs import write_train_outputs
        from ci_ml.model.train import TrainSettings, train_model

        c = ctx.config
        settings = TrainSettings.from_config(c.section("train"))
        exclude = self._exclude(ctx)

        def progress(epoch: int, total: int, text: str) -> None:
            ctx.reporter.progress("epoch", epoch, total, text)

        if settings.nproc > 1:
            from ci_ml.model.distributed import launch

            ctx.staging.mkdir(parents=True, exist_ok=True)
            launch(c, settings.nproc, ctx.staging, exclude, progress)
            metrics = json.loads(ctx.output(METRICS).read_text("utf-8"))
            history = json.loads(ctx.output(HISTORY).read_text("utf-8"))
            epochs = len(history["epochs"])
        else:
            bundle = load_data(c)
            spec = model_spec(c, bundle.input_shape, len(bundle.classes))
            result = train_model(bundle, spec, settings, progress, c.root)
            write_train_outputs(ctx.output, c, bundle, settings, result, 1, exclude)
            metrics, epochs = dict(result.metrics), len(result.history)
        where = f" on {settings.nproc} processes" if settings.nproc > 1 else ""
        headline = {k: metrics[k] for k in ("accuracy", "r2", "rmse") if k in metrics}
        return StepOutcome(StepStatus.PASSED, summary_line(metrics) + where,
                           {**headline, "epochs": epochs, "nproc": settings.nproc})

    def _run_command(self, ctx: StepContext) -> StepOutcome:
        from ci_ml.fsutil import hash_path, sha256_file
        from ci_ml.model import byo
        from ci_ml.model.records import data_record, headline, skipped_rows, write_eval_plot

        c = ctx.config
        exclude = self._exclude(ctx)
        model_dir = ctx.output(MODEL_DIR)
        done = byo.train_with_command(c, ctx.staging, model_dir, exclude, ctx.reporter.info)
        metrics, bundle = done["metrics"], done["bundle"]
        document = {"model": "trained", "task": bundle.task, "measured_by": "ci-ml",
                    **metrics, **skipped_rows(bundle)}
        if done["claimed"]:
            document["claimed"] = done["claimed"]
        atomic_write_json(ctx.output(METRICS), document)
        write_eval_plot(ctx.output, bundle.task, metrics, bundle.classes)
        code = {}
        for path in byo.code_inputs(c, exclude):
            try:
                label = path.resolve().relative_to(c.root.resolve()).as_posix()
            except ValueError:
                label = path.resolve().as_posix()
            code[label] = hash_path(path)
        atomic_write_json(ctx.output(RUN_MANIFEST), byo.command_manifest(
            c, done["run"], data_record(c, bundle), code,
            sha256_file(model_dir / "model.onnx"), headline(metrics), done["claimed"], exclude))
        claimed = done["claimed"] or {}
        lie = [k for k in ("accuracy", "r2", "rmse") if isinstance(claimed.get(k), int | float)
               and k in metrics and abs(float(claimed[k]) - float(metrics[k])) > 1e-3]
        if lie:
            ctx.reporter.warn(f"train: the script claims {lie[0]} {float(claimed[lie[0]]):.4f}; "
                              f"ci-ml measured {float(metrics[lie[0]]):.4f} from the ONNX model "
                              "(the gate uses the measured number)")
        return StepOutcome(StepStatus.PASSED, summary_line(metrics) + " (train.command, "
                           "measured by ci-ml from the ONNX model)",
                           {**{k: metrics[k] for k in ("accuracy", "r2", "rmse") if k in metrics},
                            "trainer": "command"})


PRUNED_DIR = CANDIDATE_DIR
PRUNE_REPORT = "prune-report.json"
PRUNE_PLOT = "prune-tradeoff.png"


class PruneStep(Step):
    """Prune within the accuracy budget and export the model that will be served to ONNX.

    The export always runs: ``candidate/`` holds the model the gate judges and ``serve``
    and ``deploy`` ship. Pruning itself is governed by ``prune.enabled``. When pruning
    cannot help (the budget cannot be met, the model cannot be traced, or the pruned model
    is not really faster at the batch sizes served) the unpruned model is the candidate,
    and the report and the step's summary say why.
    """

    name = "prune"
    title = "prune, export to ONNX, parity check"
    after = ("train",)
    extra = "train"
    # 4: candidate/ (was pruned/), the candidate named as such, no-speedup models not shipped.
    version = "4"

    @classmethod
    def extra_for(cls, config: Config) -> str | None:
        # A train.command model is shipped as the ONNX it is (ship_onnx_as_trained): files
        # are copied, nothing is run, so the core install does it.
        return None if uses_command(config) else cls.extra

    def preflight(self, config: Config) -> None:
        from ci_ml.model.prune.settings import PruneSettings

        PruneSettings.from_config(config.section("prune"))

    def inputs(self, ctx: StepContext) -> StepInputs:
        c = ctx.config
        data = c.section("data")
        # Copying a train.command model uses no tool: its key is the same in every job.
        tools = {} if uses_command(c) else package_versions(
            "torch", "onnx", "onnxruntime", "onnxscript", "torch-pruning")
        return StepInputs(
            files=data_files(c),
            config={"prune": dict(c.section("prune")), "data": dict(data)},
            tools=tools,
        )

    def outputs(self, config: Config) -> tuple[str, ...]:
        return (PRUNED_DIR, PRUNE_REPORT, PRUNE_PLOT)

    def run(self, ctx: StepContext) -> StepOutcome:
        from ci_ml.model.card import TRAINER_COMMAND, read_card

        # Checked before anything imports torch: a train.command project's job has none.
        if read_card(ctx.artifact(MODEL_DIR)).trainer == TRAINER_COMMAND:
            return ship_onnx_as_trained(ctx)
        return self._prune(ctx)

    def _prune(self, ctx: StepContext) -> StepOutcome:
        import shutil

        from ci_ml.errors import InputError
        from ci_ml.model.card import REGRESSION
        from ci_ml.model.export import export_onnx, onnx_files
        from ci_ml.model.persist import SPEC, load_model, save_model
        from ci_ml.model.prune.persist import save_pruned
        from ci_ml.model.prune.report import write_prune_report
        from ci_ml.model.prune.search import prune_model
        from ci_ml.model.prune.settings import PruneSettings
        from ci_ml.model.train import evaluate_model
        from ci_ml.model.zoo import card_spec

        section = ctx.config.section("prune")
        model, card = load_model(ctx.artifact(MODEL_DIR))
        out = ctx.output(PRUNED_DIR)
        out.mkdir(parents=True, exist_ok=True)
        onnx_out = out / "model.onnx"
        copy_reference(ctx, out)

        def unpruned(reason: str) -> StepOutcome:
            save_model(model, card, out)
            export = export_onnx(model, card_spec(card).input_shape, onnx_out)
            atomic_write_json(ctx.output(PRUNE_REPORT), {
                "pruned": False, "met_budget": False, "reason": reason,
                "candidate": _candidate_block(False, reason, out, ctx.staging),
                "served": {"onnx_bytes": export.bytes_total, "accuracy": None},
            })
            return StepOutcome(StepStatus.PASSED, f"candidate: the unpruned model ({reason}; "
                               f"{export.bytes_total} bytes)", {"pruned": False})

        if not section["enabled"]:
            return unpruned("prune.enabled is false")
        if card.task == REGRESSION:
            # Pruning fine-tunes with cross-entropy and budgets accuracy: classifiers only.
            ctx.reporter.info("prune: skipped: pruning supports classification models; the "
                              "regression model ships unpruned")
            return unpruned("pruning supports classification models; a regression model "
                            "ships unpruned")
        bundle = load_data(ctx.config)
        train, test = bundle.split("train"), bundle.split("test")
        work = ctx.staging / ".prune-work"
        try:
            result = prune_model(model, card_spec(card), (train.x, train.y), (test.x, test.y),
                                 PruneSettings.from_config(section), ctx.reporter.info,
                                 work_dir=work)
        except InputError as exc:
            ctx.reporter.warn(f"prune: {exc.message}; keeping the unpruned model")
            return unpruned(exc.message)
        if result.pruned:
            save_pruned(result.model, result.history, out, spec=card_spec(card))
            atomic_write_json(out / SPEC, card.to_json())
        else:
            save_model(result.model, card, out)
        # The gate and the registry judge the candidate, so it gets its own metrics.
        atomic_write_json(out / METRICS, {"model": "candidate",
                                          "candidate": "pruned" if result.pruned else "unpruned",
                                          **evaluate_model(result.model, test, bundle.classes)})
        assert result.onnx_path is not None
        for src in onnx_files(result.onnx_path):
            # The served file is always model.onnx (its external data keeps its own name).
            dest = onnx_out if src == result.onnx_path else out / src.name
            shutil.copy2(src, dest)
        write_prune_report(result, ctx.staging)
        report = json.loads(ctx.output(PRUNE_REPORT).read_text("utf-8"))
        report["served"] = _served_stats(result)
        report["candidate"] = _candidate_block(result.pruned, result.reason, out, ctx.staging)
        _name_kept_files(report, result.pruned)
        atomic_write_json(ctx.output(PRUNE_REPORT), report)
        shutil.rmtree(work, ignore_errors=True)
        if not result.pruned:
            ctx.reporter.warn(f"prune: {result.reason}")  # every reason says the unpruned ships
        comp = result.comparison
        summary = (f"candidate: the pruned model; {comp.verdict}"
                   if comp is not None and result.pruned
                   else f"candidate: the unpruned model ({result.reason})")
        return StepOutcome(StepStatus.PASSED, summary,
                           {"pruned": result.pruned, "met_budget": result.met_budget})


def _candidate_block(pruned: bool, reason: str, out: Path, staging: Path) -> dict[str, Any]:
    """Which model is the candidate, why, and its files (paths under --out)."""
    files = sorted(p.relative_to(staging).as_posix() for p in out.rglob("*") if p.is_file())
    return {"model": "pruned" if pruned else "unpruned", "why": reason, "files": files}


def _name_kept_files(report: dict[str, Any], pruned: bool) -> None:
    """The report names only files that exist under --out: the measured exports (base.onnx,
    pruned.onnx, the int8 variants) lived in a work directory; the one kept is the
    candidate's model.onnx."""
    kept = f"{PRUNED_DIR}/model.onnx"
    report["output_onnx"] = kept
    comparison = report.get("comparison") or {}
    for side, is_kept in (("base", not pruned), ("candidate", pruned)):
        onnx = (comparison.get(side) or {}).get("onnx")
        if isinstance(onnx, dict):
            onnx.pop("files", None)
            onnx["path"] = kept if is_kept else None
    for variant in report.get("quantization") or []:
        variant["file"] = kept if pruned and variant.get("kept") else None
def copy_reference(ctx: StepContext, out: Path) -> None:
    """The training reference profile travels with the candidate (monitoring reads it)."""
    import shutil

    from ci_ml.model.card import REFERENCE

    src = ctx.artifact(MODEL_DIR) / REFERENCE
    if src.is_file():
        shutil.copy2(src, out / REFERENCE)


def ship_onnx_as_trained(ctx: StepContext) -> StepOutcome:
    """A model made by train.command exists only as ONNX: prune needs a PyTorch model it can
    trace, so the trained ONNX model is the candidate, with its card and ci-ml's metrics."""
    import shutil

    from ci_ml.model.card import CARD

    src, out = ctx.artifact(MODEL_DIR), ctx.output(PRUNED_DIR)
    out.mkdir(parents=True, exist_ok=True)
    for path in (src / "model.onnx", *src.glob("model.onnx.data"), src / CARD):
        if path.is_file():
            shutil.copy2(path, out / path.name)
    copy_reference(ctx, out)
    metrics = json.loads(ctx.artifact(METRICS).read_text("utf-8"))
    metrics.update({"model": "candidate", "candidate": "trained"})
    atomic_write_json(out / METRICS, metrics)
    size = sum(p.stat().st_size for p in out.glob("model.onnx*"))
    reason = ("the model was made by train.command and exists only as ONNX; pruning needs a "
              "PyTorch model it can trace (the zoo or a package.module:factory)")
    atomic_write_json(ctx.output(PRUNE_REPORT), {
        "pruned": False, "met_budget": False, "skipped": True, "reason": reason,
        "candidate": {**_candidate_block(False, reason, out, ctx.staging), "model": "trained"},
        "served": {"onnx_bytes": size, "accuracy": metrics.get("accuracy")},
    })
    ctx.reporter.info(f"prune: skipped: {reason}")
    return StepOutcome(StepStatus.PASSED, f"skipped: {reason}; the trained ONNX model ships "
                       f"({size} bytes)", {"pruned": False, "skipped": True})


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
