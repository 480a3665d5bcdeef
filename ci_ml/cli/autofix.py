"""``ci-ml autofix``: the recommended retry for the last failed step run, and ``--apply``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ci_ml.cli.common import common_options, print_run
from ci_ml.config import load_config
from ci_ml.console import Reporter
from ci_ml.errors import EXIT_BLOCKED, EXIT_OK


@click.command()
@click.option("--apply", "apply_it", is_flag=True,
              help="Re-run the failed step (and what its command ran after it) with the "
                   "recommended configuration.")
@click.option("--run", "run_id", default=None, metavar="RUN_ID",
              help="The run to fix (default: the latest run this machine or CI job recorded).")
@common_options
def autofix(apply_it: bool, run_id: str | None, config_path: Path | None, out_dir: Path,
            quiet: bool) -> None:
    """Classify the last failed step run and recommend how to retry it, with its numbers.

    Deterministic failures (bad input or config, code errors, missing tools) are never
    retried; transient ones are retried unchanged after a backoff; for out of memory,
    timeouts and exhausted resources the configuration minimizing P(fail) x penalty +
    cost, as a model fitted on the run history predicts them, is recommended.
    Exit 0: a retry is recommended (with --apply: the retry succeeded); 1: no retry is
    advised (or, with --apply, the retry's own exit code); 2: no failed run to fix.
    """
    from ci_ml.autofix.history import writer_id
    from ci_ml.autofix.record import open_history
    from ci_ml.autofix.remediate import last_failed, recommend
    from ci_ml.autofix.report import lines
    from ci_ml.autofix.retry import rerun

    config = load_config(config_path)
    history = open_history(config)
    records = history.records()
    failed = last_failed(records, config.project_name, None if run_id else history.writer,
                         run_id)
    rec = recommend(config, failed, records)
    for line in lines(rec, float(config.section("autofix")["penalty"])):
        click.echo(line)
    if history.skipped:
        click.echo(f"warning: {history.skipped} unreadable line(s) in {history.directory} "
                   "were skipped", err=True)
    if failed.writer != writer_id():
        click.echo(f"note: the failed run was recorded by {failed.writer}", err=True)
    if not rec.retry:
        sys.exit(EXIT_BLOCKED)
    if not apply_it:
        sys.exit(EXIT_OK)
    result = rerun(config, rec, out_dir, Reporter(quiet=quiet))
    print_run(result)
    sys.exit(result.exit_code)


COMMANDS = (autofix,)
