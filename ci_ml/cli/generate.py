"""``ci-ml generate github|gitlab``: write the project's CI pipeline from its config."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ci_ml.ci.generate import check_output_dir, drift, render_target, write_files
from ci_ml.ci.registry import TARGETS
from ci_ml.cli.common import common_options
from ci_ml.config import load_config
from ci_ml.errors import EXIT_BLOCKED


@click.command()
@click.argument("target", type=click.Choice(sorted(TARGETS)))
@click.option("--output", "output", type=click.Path(path_type=Path), default=None,
              help="Repository root to write into (default: the config's directory).")
@click.option("--check", is_flag=True,
              help="Write nothing; exit 1 and show a diff if the files on disk are stale.")
@click.option("--force", is_flag=True, help="Replace files that ci-ml did not generate.")
@common_options
def generate(target: str, output: Path | None, check: bool, force: bool,
             config_path: Path | None, out_dir: Path, quiet: bool) -> None:
    """Write the CI pipeline for TARGET (github or gitlab) from the config.

    github: .github/workflows/ci-ml.yml and the composite actions it calls under
    .github/actions/ci-ml/. gitlab: .gitlab-ci.yml and the components it includes
    under .gitlab/ci-ml/. --out is the artifacts directory the generated jobs use.
    """
    config = load_config(config_path)
    root = output if output is not None else config.root
    check_output_dir(root)
    files = render_target(target, config, root, out_dir)
    if check:
        stale = drift(files, root)
        for item in stale:
            click.echo(item.diff, nl=False)
        if stale:
            click.echo(f"{len(stale)} of {len(files)} generated file(s) are stale; "
                       f"run `ci-ml generate {target}` to update them", err=True)
            sys.exit(EXIT_BLOCKED)
        if not quiet:
            click.echo(f"{len(files)} generated file(s) are up to date")
        return
    written = write_files(files, root, force=force)
    if not quiet:
        for path in written:
            click.echo(f"wrote {path}")


COMMANDS = (generate,)
