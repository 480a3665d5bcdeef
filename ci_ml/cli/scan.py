"""``ci-ml scan <scanner>``: one subcommand per scanner, each a pipeline step."""

from __future__ import annotations

from pathlib import Path

import click

from ci_ml.cli.common import common_options, run_steps

SCAN_HELP: dict[str, str] = {
    "code": "Scan the project's code with bandit; writes scans/code.json.",
    "dast": "Scan a running model endpoint (ZAP or built-in); writes scans/dast.json.",
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


# Replaces the generic "dast" command made above: DAST takes a target and engine options.
@scan.command("dast")
@click.option("--target", metavar="URL", default=None,
              help="Base URL of the running endpoint (default: scan.dast.target; if unset, the "
                   "pruned model is served on a loopback port for the scan).")
@click.option("--model", "model_path", type=click.Path(path_type=Path), default=None,
              help="ONNX model: its signature shapes the payloads (with --target), or it is the "
                   "model served for the scan (without).")
@click.option("--zap-url", metavar="URL", default=None,
              help="A running ZAP daemon; without it the built-in engine scans.")
@click.option("--zap-api-key-env", metavar="NAME", default=None,
              help="Environment variable holding ZAP's API key (default: ZAP_API_KEY).")
@click.option("--zap-report", type=click.Path(path_type=Path), default=None,
              help="Import a ZAP traditional-json report instead of scanning.")
@click.option("--rules", "rules_path", type=click.Path(path_type=Path), default=None,
              help="ZAP rules file: <plugin id><TAB>IGNORE|INFO|WARN|FAIL per line.")
@click.option("--active/--no-active", default=None,
              help="Send attack payloads (default: scan.dast.active, on).")
@click.option("--timeout", "timeout_s", type=float, default=None,
              help="Seconds to wait for one answer before it counts as a hang.")
@common_options
def dast(target: str | None, model_path: Path | None, zap_url: str | None,
         zap_api_key_env: str | None, zap_report: Path | None, rules_path: Path | None,
         active: bool | None, timeout_s: float | None, config_path: Path | None, out_dir: Path,
         quiet: bool) -> None:
    """Scan a running model endpoint; writes scans/dast.json (exit 3 if the scan did not run).

    Findings go to the gate like every scanner's; this command itself exits 0 when the
    scan ran, whatever it found.
    """
    import sys

    from ci_ml.cli.common import print_run
    from ci_ml.config import load_config
    from ci_ml.console import Reporter
    from ci_ml.pipeline.runner import run_pipeline
    from ci_ml.scan.dast import with_cli_options

    config = with_cli_options(load_config(config_path), target=target, model=model_path,
                              zap_url=zap_url, zap_api_key_env=zap_api_key_env,
                              zap_report=zap_report, rules=rules_path, active=active,
                              timeout_s=timeout_s)
    result = run_pipeline(config, out_dir, only=["scan-dast"], reporter=Reporter(quiet=quiet))
    print_run(result)
    sys.exit(result.exit_code)
