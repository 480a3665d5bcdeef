"""The data-check step (streamed per-column checks -> data-report.json) and ``data infer``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ci_ml.config import Config
from ci_ml.data.checks import run_checks
from ci_ml.data.loader import open_split
from ci_ml.data.profile import profile_batches
from ci_ml.data.schema import DataSchema, infer_schema, read_schema
from ci_ml.data.source import iter_batches
from ci_ml.errors import InputError
from ci_ml.fsutil import atomic_write_json, sha256_file
from ci_ml.pipeline.interface import Step, StepContext, StepInputs, StepOutcome, StepStatus

DATA_REPORT = "data-report.json"
DATA_SCHEMA = "data-schema.json"


def check_inputs(config: Config) -> None:
    """Cheap up-front checks: both files open (format, encoding, header), the target is there."""
    data = config.section("data")
    train, test = open_split(config, "train"), open_split(config, "test")
    target = str(data["target"])
    if data.get("schema"):
        read_schema(config.resolve(str(data["schema"])))
    for src in (train, test):
        if target not in src.columns:
            raise InputError(f"{src.key}: {src.path}: no target column {target!r} (data.target); "
                             f"columns are: {', '.join(src.columns[:8])}"
                             f"{' ...' if len(src.columns) > 8 else ''}")
        for name in data.get("features") or ():
            if name not in src.columns:
                raise InputError(f"{src.key}: {src.path}: no feature column {name!r} "
                                 "(data.features)")


class DataCheckStep(Step):
    name = "data-check"
    title = "per-column schema, quality, leakage and drift checks"
    # 2: per-column checks, streamed; the schema in the report.
    version = "2"
    # CSV and Parquet are read with pyarrow (the [data] extra).
    extra = "data"

    def preflight(self, config: Config) -> None:
        check_inputs(config)

    def inputs(self, ctx: StepContext) -> StepInputs:
        from ci_ml.model.layout import data_files

        data = ctx.config.section("data")
        return StepInputs(files=data_files(ctx.config),
                          config={"data": dict(data),
                                  "seed": ctx.config.section("train").get("seed", 0)})

    def outputs(self, config: Config) -> tuple[str, ...]:
        return (DATA_REPORT,)

    def run(self, ctx: StepContext) -> StepOutcome:
        def progress(split: str, rows: int) -> None:
            if rows and rows % 1_000_000 < 70_000:
                ctx.reporter.info(f"data-check: {split}: {rows:,} rows")

        report = run_checks(ctx.config, progress)
        atomic_write_json(ctx.output(DATA_REPORT), report.to_json())
        failed = report.failed
        summary = (f"{len(report.checks)} checks passed" if not failed
                   else f"{len(failed)} of {len(report.checks)} checks failed: {', '.join(failed)}")
        # A failed data check is evidence for the gate, which decides whether it blocks;
        # `ci-ml data check` itself exits 1 on it.
        return StepOutcome(StepStatus.PASSED, summary, {"failed": failed})


def infer_data_schema(config: Config) -> DataSchema:
    """``ci-ml data infer``: the schema of the training split (streamed)."""
    data = config.section("data")
    src = open_split(config, "train")
    target = str(data["target"])
    if target not in src.columns:
        raise InputError(f"data.train: {src.path}: no target column {target!r}; columns are: "
                         f"{', '.join(src.columns[:10])}")
    profiles, rows, _ = profile_batches(iter_batches(src), list(src.columns),
                                        seed=int(config.section("train").get("seed", 0)))
    ids = data.get("id_columns")
    features = data.get("features")
    return infer_schema(profiles, rows, target=target, task=str(data.get("task", "auto")),
                        features=list(features) if features else None,
                        id_columns=list(ids) if ids is not None else None,
                        source={"path": src.path.name, "sha256": sha256_file(src.path)})


def write_schema(schema: DataSchema, path: Path) -> dict[str, Any]:
    doc = schema.to_json()
    atomic_write_json(path, doc)
    return doc
