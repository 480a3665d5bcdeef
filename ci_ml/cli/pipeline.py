"""Commands that run pipeline steps: run, data check, train, prune, gate."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import click

from ci_ml.cli.common import STAGES, common_options, print_run, run_steps
from ci_ml.config import Config, load_config
from ci_ml.console import Reporter
from ci_ml.data.step import DATA_REPORT, DATA_SCHEMA
from ci_ml.errors import EXIT_BLOCKED
from ci_ml.pipeline.registry import STEPS
from ci_ml.pipeline.runner import check_out_dir, run_pipeline


@click.command()
@click.option("--stage", type=STAGES, default="staging", show_default=True,
              help="Stage whose policy the gate applies.")
@click.option("--only", "only", multiple=True, metavar="STEP",
              help="Run only STEP (repeatable), after restoring or running what it needs. "
                   f"Steps: {', '.join(STEPS)}.")
@click.option("--force", is_flag=True, help="Ignore the step cache and run every step.")
@click.option("--autofix", "autofix_retries", type=click.IntRange(0, 20), default=0,
              metavar="N", show_default=True,
              help="After a failed step, retry up to N times as `ci-ml autofix` recommends.")
@common_options
def run(stage: str, only: tuple[str, ...], force: bool, autofix_retries: int,
        config_path: Path | None, out_dir: Path, quiet: bool) -> None:
    """Run the whole pipeline locally: data check, train, prune, scans, gate."""
    if not autofix_retries:
        run_steps(config_path, out_dir, quiet, only or None, stage, force)
    from ci_ml.autofix.retry import run_with_autofix

    result = run_with_autofix(load_config(config_path), out_dir, retries=autofix_retries,
                              stage=stage, only=only or None, force=force,
                              reporter=Reporter(quiet=quiet), echo=click.echo)
    print_run(result)
    sys.exit(result.exit_code)


@click.group()
def data() -> None:
    """Data checks."""


@data.command("check")
@common_options
def data_check(config_path: Path | None, out_dir: Path, quiet: bool) -> None:
    """Per-column schema, quality, leakage and drift checks, streamed; writes
    data-report.json. Exits 1 when a check fails (`ci-ml run` goes on: the gate weighs it)."""
    config = load_config(config_path)
    result = run_pipeline(config, out_dir, only=["data-check"], reporter=Reporter(quiet=quiet))
    print_run(result)
    failed = failed_checks(out_dir / DATA_REPORT)
    if result.exit_code == 0 and failed:
        click.echo(f"data check failed: {', '.join(failed)} (details in "
                   f"{out_dir / DATA_REPORT})", err=True)
        sys.exit(EXIT_BLOCKED)
    sys.exit(result.exit_code)


def failed_checks(report: Path) -> list[str]:
    try:
        doc = json.loads(report.read_text("utf-8"))
    except (OSError, ValueError):
        return ["data-report.json unreadable"]
    return [str(c.get("name")) for c in doc.get("checks", []) if not c.get("passed")]


@data.command("infer")
@click.option("--output", type=click.Path(path_type=Path), default=None,
              help=f"Where to write the schema [default: <out>/{DATA_SCHEMA}].")
@common_options
def data_infer(output: Path | None, config_path: Path | None, out_dir: Path,
               quiet: bool) -> None:
    """Infer the per-column schema of the training split (kinds, ranges, categories,
    nullability, identifier-like columns); point data.schema at it to check against it."""
    from ci_ml.data.step import infer_data_schema, write_schema
    from ci_ml.extras import require

    require("data", "ci-ml data infer")
    config = load_config(config_path)
    target = output if output is not None else out_dir / DATA_SCHEMA
    check_out_dir(target.parent)
    schema = infer_data_schema(config)
    write_schema(schema, target)
    if not quiet:
        for c in schema.columns:
            extra = f" ({c.reason})" if c.reason else ""
            click.echo(f"  {c.name}: {c.kind}, {c.role}{extra}")
    ids = [c.name for c in schema.identifiers]
    click.echo(f"{len(schema.columns)} columns, {len(schema.features)} features, task "
               f"{schema.task}" + (f", identifiers: {', '.join(ids)}" if ids else "")
               + f"; wrote {target}")


@click.command()
@click.option("--nproc", type=click.IntRange(min=1), default=None,
              help="Train on N processes with PyTorch DDP (gloo) via torchrun "
                   "[default: train.nproc, 1].")
@click.option("--force", is_flag=True, help="Ignore the step cache and train again.")
@common_options
def train(nproc: int | None, force: bool, config_path: Path | None, out_dir: Path,
          quiet: bool) -> None:
    """Train the model from the config; writes model/, metrics.json, train-history.json,
    train-run.json and plots/."""
    config = load_config(config_path)
    if nproc is not None:
        config = with_train_nproc(config, nproc)
    result = run_pipeline(config, out_dir, only=["train"], force=force,
                          reporter=Reporter(quiet=quiet))
    print_run(result)
    sys.exit(result.exit_code)


def with_train_nproc(config: Config, nproc: int) -> Config:
    """The config with ``train.nproc`` overridden (it is part of the train step's cache key)."""
    data = dict(config.data)
    data["train"] = {**config.section("train"), "nproc": nproc}
    return replace(config, data=data)


@click.command()
@common_options
def prune(config_path: Path | None, out_dir: Path, quiet: bool) -> None:
    """Prune and export the trained model to ONNX; writes candidate/, prune-report.json."""
    run_steps(config_path, out_dir, quiet, ["prune"])


@click.command()
@click.option("--stage", type=STAGES, default="staging", show_default=True)
@common_options
def gate(stage: str, config_path: Path | None, out_dir: Path, quiet: bool) -> None:
    """Decide promotion to a stage from metrics, data checks and findings (exit 1 if blocked)."""
    run_steps(config_path, out_dir, quiet, ["gate"], stage)


COMMANDS = (run, data, train, prune, gate)
