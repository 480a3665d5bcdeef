"""What every command shares: --config/--out options and running steps through the pipeline."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

from ci_ml.config import load_config
from ci_ml.console import Reporter
from ci_ml.pipeline.interface import StepStatus
from ci_ml.pipeline.runner import RunResult, run_pipeline

F = TypeVar("F", bound=Callable[..., Any])
DEFAULT_OUT = Path("ci-ml-out")
STAGES = click.Choice(["staging", "production"])


def common_options(func: F) -> F:
    """--config, --out and --quiet on every command, as DESIGN.md promises."""

    @click.option("--config", "config_path", type=click.Path(path_type=Path), default=None,
                  help="Config file (default: ./ci-ml.yaml, or [tool.ci-ml] in pyproject.toml).")
    @click.option("--out", "out_dir", type=click.Path(path_type=Path), default=DEFAULT_OUT,
                  show_default=True, help="Directory for this command's artifacts.")
    @click.option("-q", "--quiet", is_flag=True, help="Only errors and the final result.")
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def print_run(result: RunResult) -> None:
    decision_path = result.out_dir / "decision.json"
    if result.record("gate") is not None and decision_path.is_file():
        decision = json.loads(decision_path.read_text("utf-8"))
        blocking = decision.get("blocking") or []
        click.echo(f"decision: {decision['decision'].upper()} for {decision['stage']}"
                   + (f" (blocking: {', '.join(blocking)})" if blocking else ""))
    done = [r for r in result.records if r.status is not StepStatus.SKIPPED]
    cached = sum(1 for r in done if r.cached)
    # The generated CI steps parse this line for their `cached` output: change both together.
    click.echo(f"steps: {len(done) - cached} ran, {cached} from cache; artifacts in {result.out_dir}")
    for r in result.records:
        if r.status is StepStatus.ERROR:
            click.echo(f"error: {r.name}: {r.summary}", err=True)


def run_steps(config_path: Path | None, out_dir: Path, quiet: bool, only: Sequence[str] | None,
              stage: str = "staging", force: bool = False) -> None:
    """Run steps (all, or ``only`` plus what they need), print the outcome, exit with its code."""
    config = load_config(config_path)
    result = run_pipeline(config, out_dir, stage=stage, only=only, force=force,
                          reporter=Reporter(quiet=quiet))
    print_run(result)
    sys.exit(result.exit_code)
