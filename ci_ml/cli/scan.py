"""``ci-ml scan <scanner>``: one subcommand per scanner, each a pipeline step."""

from __future__ import annotations

from pathlib import Path

import click

from ci_ml.cli.common import common_options, run_steps

SCAN_HELP: dict[str, str] = {
    "code": "Scan the project's code with bandit; writes scans/code.json.",
}


@click.group()
def scan() -> None:
    """Security scans. Each writes scans/<scanner>.json; exit 3 if the tool did not run."""


def _add(name: str, help_text: str) -> None:
    @scan.command(name, help=help_text)
    @common_options
    def command(config_path: Path | None, out_dir: Path, quiet: bool) -> None:
        run_steps(config_path, out_dir, quiet, [f"scan-{name}"])


for _name, _help in SCAN_HELP.items():
    _add(_name, _help)

COMMANDS = (scan,)
