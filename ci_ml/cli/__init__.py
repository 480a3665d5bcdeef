"""The command line: parse, call the library, map errors to exit codes. Nothing else.

Commands live in one module per family (``ci_ml/cli/<family>.py``), each exporting
``COMMANDS``; ``FAMILIES`` below is the one place they are registered.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Sequence
from typing import NoReturn

import click

import ci_ml
from ci_ml.cli import (
    autofix,
    deploy,
    generate,
    model,
    monitor,
    pipeline,
    project,
    registry,
    scan,
    serve,
)
from ci_ml.errors import EXIT_INTERRUPTED, EXIT_TOOL, EXIT_USAGE, CiMlError
from ci_ml.extras import MissingExtraError, extra_of_module

FAMILIES = (project, pipeline, model, scan, serve, registry, deploy, generate, monitor, autofix)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(ci_ml.__version__, prog_name="ci-ml")
@click.option("-v", "--verbose", is_flag=True, help="Show a traceback with errors.")
def cli(verbose: bool) -> None:
    """ci-ml: data checks, training, pruning, security scans and one promotion gate,
    the same locally and in GitHub Actions or GitLab CI.

    Exit codes: 0 pass, 1 gate blocked, 2 bad usage/config/input, 3 a tool failed, 130 interrupted.
    """


for _family in FAMILIES:
    for _command in _family.COMMANDS:
        cli.add_command(_command)


def _wants_traceback(argv: Sequence[str]) -> bool:
    return "-v" in argv or "--verbose" in argv


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        cli.main(args=args, prog_name="ci-ml", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(EXIT_USAGE)
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except CiMlError as exc:
        if _wants_traceback(args):
            traceback.print_exc()
        click.echo(f"error: {exc.message}", err=True)
        if exc.hint:
            click.echo(f"hint: {exc.hint}", err=True)
        sys.exit(exc.exit_code)
    except ModuleNotFoundError as exc:
        # An import of an optional part that no `require()` guarded: still the user's
        # install, not a bug, when an extra brings that module.
        extra = extra_of_module(exc.name or "")
        if extra is None:
            _internal(exc, args)
        if _wants_traceback(args):
            traceback.print_exc()
        missing = MissingExtraError(extra, "this command", (exc.name or "",))
        click.echo(f"error: {missing.message}", err=True)
        sys.exit(EXIT_USAGE)
    except Exception as exc:  # a bug in ci-ml, not the user's mistake
        _internal(exc, args)
    sys.exit(0)


def _internal(exc: Exception, args: Sequence[str]) -> NoReturn:
    if _wants_traceback(args):
        traceback.print_exc()
    click.echo(f"error: internal error: {type(exc).__name__}: {exc} "
               "(run with --verbose for a traceback)", err=True)
    sys.exit(EXIT_TOOL)
