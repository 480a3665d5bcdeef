"""``ci-ml init``: scaffold a config for an existing project."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ci_ml.scaffold import init_project
from ci_ml.scan.advisory_source import choose_source


@click.command()
@click.argument("directory", type=click.Path(path_type=Path), default=Path("."))
@click.option("--target", help="Label column (default: guessed, or asked in a terminal).")
@click.option("--force", is_flag=True, help="Overwrite an existing ci-ml.yaml.")
def init(directory: Path, target: str | None, force: bool) -> None:
    """Write a commented ci-ml.yaml for an existing project (finds its CSV data)."""

    def ask(candidates: list[str], guess: str) -> str:
        if not sys.stdin.isatty():
            return guess
        return str(click.prompt("Target (label) column", default=guess,
                                type=click.Choice(candidates), show_choices=len(candidates) < 12))

    advisory = choose_source(directory)
    path = init_project(directory, target=target, force=force, ask=ask, advisory=advisory)
    click.echo(f"wrote {path}; next: ci-ml run --config {path}")
    click.echo(f"dependency audit: {advisory.description}",
               err=not advisory.reachable)


COMMANDS = (init,)
