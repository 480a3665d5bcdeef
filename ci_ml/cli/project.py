"""``ci-ml init``: scaffold a config for an existing project."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ci_ml.scaffold import SIGNING_KEY, VERIFY_KEY, init_project
from ci_ml.scan.advisory_source import choose_source


@click.command()
@click.argument("directory", type=click.Path(path_type=Path), default=Path("."))
@click.option("--target", help="Label column (default: guessed, or asked in a terminal).")
@click.option("--force", is_flag=True, help="Overwrite an existing ci-ml.yaml.")
@click.option("--test-size", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              default=0.2, show_default=True,
              help="With a single data file: the share of rows split off for testing.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="With a single data file: the seed of the stratified split.")
def init(directory: Path, target: str | None, force: bool, test_size: float, seed: int) -> None:
    """Write a commented ci-ml.yaml for an existing project (finds its CSV or Parquet data;
    a single data file is split into train and test, seeded and stratified)."""
    from ci_ml.extras import require

    require("data", "ci-ml init")  # it reads the data files (pyarrow)

    def ask(candidates: list[str], guess: str) -> str:
        if not sys.stdin.isatty():
            return guess
        return str(click.prompt("Target (label) column", default=guess,
                                type=click.Choice(candidates), show_choices=len(candidates) < 12))

    def confirm(question: str) -> bool:
        if not sys.stdin.isatty():
            return True  # non-interactive (CI, scripts): the split is what init offers
        return bool(click.confirm(question, default=True))

    advisory = choose_source(directory)
    path = init_project(directory, target=target, force=force, ask=ask, confirm=confirm,
                        test_size=test_size, seed=seed, say=click.echo, advisory=advisory)
    click.echo(f"wrote {path}; next: ci-ml run --config {path}")
    click.echo(f"dependency audit: {advisory.description}",
               err=not advisory.reachable)
    click.echo(f"registry signing key: {SIGNING_KEY} (git-ignored: store it as the CI secret "
               f"CI_ML_SIGNING_KEY), public key {VERIFY_KEY} (commit it)")


COMMANDS = (init,)
