"""``ci-ml scan <scanner>``: one subcommand per scanner, each a pipeline step plus reports."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ci_ml.cli.common import common_options, print_run
from ci_ml.config import Config, load_config
from ci_ml.scan.registry import SCANNERS

SEVERITIES = click.Choice(["critical", "high", "medium", "low", "info"], case_sensitive=False)


@click.group()
def scan() -> None:
    """Security scans. Each writes scans/<scanner>.json, then findings.json, report.sarif,
    the gl-*-report.json files, junit.xml and summary.md for every scan result in --out.

    Exit codes: 0 the scan ran; 1 findings at or above --fail-on remain after waivers, or
    the scan is incomplete (something it was asked to cover could not be checked and no
    waiver accepts that); 2 bad config or input; 3 the tool is missing, crashed, timed out
    or printed garbage.
    """


def _abs(path: Path | None) -> str | None:
    return str(path.resolve()) if path is not None else None


def _run(name: str, config_path: Path | None, out_dir: Path, quiet: bool, force: bool,
         fail_on: str | None, waivers: Path | None, overrides: dict[str, Any]) -> None:
    _finish(name, load_config(config_path), out_dir, quiet, force, fail_on, waivers, overrides)


def _finish(name: str, config: Config, out_dir: Path, quiet: bool, force: bool,
            fail_on: str | None, waivers: Path | None, overrides: dict[str, Any]) -> None:
    from ci_ml.scan.command import run_scan_command, with_overrides
    from ci_ml.scan.step import ADVISORIES_ENV

    if overrides.get("advisories"):
        # The command line beats the environment, which beats the config.
        os.environ.pop(ADVISORIES_ENV, None)
    config = with_overrides(config, name, {**overrides, "waivers": _abs(waivers)})
    outcome = run_scan_command(config, name, out_dir, quiet=quiet, force=force, fail_on=fail_on)
    print_run(outcome.run)
    if outcome.waivers is not None:
        for message in outcome.waivers.messages():
            click.echo(f"warning: {message}", err=True)
    if outcome.written:
        click.echo(f"reports: {', '.join(outcome.written)}")
    if fail_on and outcome.above_threshold:
        click.echo(f"{outcome.above_threshold} {name} finding(s) at or above {fail_on} "
                   "remain after waivers", err=True)
    if outcome.not_covered:
        click.echo(f"scan {name} is incomplete ({len(outcome.not_covered)} not covered; the "
                   f"gate blocks on it): {outcome.not_covered[0]}", err=True)
    sys.exit(outcome.exit_code)


def _scan_options(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option("--fail-on", type=SEVERITIES, default=None,
                        help="Exit 1 if findings at or above this severity remain after "
                             "waivers.")(func)
    func = click.option("--waivers", type=click.Path(path_type=Path), default=None,
                        help="Waivers file (overrides scan.waivers).")(func)
    func = click.option("--force", is_flag=True, help="Ignore the cache and scan again.")(func)
    return common_options(func)


@scan.command("code")
@_scan_options
@click.option("--path", "paths", multiple=True, type=click.Path(path_type=Path),
              help="File or directory to scan (repeatable; overrides scan.code.paths).")
def code(config_path: Path | None, out_dir: Path, quiet: bool, force: bool, waivers: Path | None,
         fail_on: str | None, paths: tuple[Path, ...]) -> None:
    """Scan the project's Python code with bandit."""
    _run("code", config_path, out_dir, quiet, force, fail_on, waivers,
         {"paths": tuple(_abs(p) for p in paths)})


@scan.command("deps")
@_scan_options
@click.option("-r", "--requirement", "requirements", multiple=True,
              type=click.Path(path_type=Path),
              help="Pinned requirements file (repeatable; overrides scan.deps.requirements).")
@click.option("--advisories", type=click.Path(path_type=Path), default=None,
              help="Offline OSV advisory directory (overrides CI_ML_ADVISORIES and "
                   "scan.deps.advisories).")
def deps(config_path: Path | None, out_dir: Path, quiet: bool, force: bool, waivers: Path | None,
         fail_on: str | None, requirements: tuple[Path, ...], advisories: Path | None) -> None:
    """Audit pinned requirements with pip-audit (offline with --advisories)."""
    _run("deps", config_path, out_dir, quiet, force, fail_on, waivers,
         {"requirements": tuple(_abs(p) for p in requirements),
          "advisories": _abs(advisories)})


@scan.command("image")
@_scan_options
@click.option("--image", "image", default=None, help="A local docker image (name:tag or ID).")
@click.option("--input", "archive", type=click.Path(path_type=Path), default=None,
              help="An image archive from `docker save`.")
@click.option("--advisories", type=click.Path(path_type=Path), default=None,
              help="Offline OSV advisory directory: match the image's Python packages offline.")
def image(config_path: Path | None, out_dir: Path, quiet: bool, force: bool, waivers: Path | None,
          fail_on: str | None, image: str | None, archive: Path | None,
          advisories: Path | None) -> None:
    """Scan a container image with trivy (vulnerabilities, secrets, misconfigurations)."""
    if image and archive:
        raise click.UsageError("give --image or --input, not both")
    overrides: dict[str, Any] = {"advisories": _abs(advisories), "image": image,
                                 "input": _abs(archive)}
    _run("image", config_path, out_dir, quiet, force, fail_on, waivers, overrides)


@scan.command("iac")
@_scan_options
@click.option("--path", "paths", multiple=True, type=click.Path(path_type=Path),
              help="File or directory to scan (repeatable; overrides scan.iac.paths).")
def iac(config_path: Path | None, out_dir: Path, quiet: bool, force: bool, waivers: Path | None,
        fail_on: str | None, paths: tuple[Path, ...]) -> None:
    """Scan Dockerfiles, Kubernetes manifests and committed secrets with trivy."""
    _run("iac", config_path, out_dir, quiet, force, fail_on, waivers,
         {"paths": tuple(_abs(p) for p in paths)})


@scan.command("model")
@_scan_options
@click.option("--path", "paths", multiple=True, type=click.Path(path_type=Path),
              help="Extra model file or directory (repeatable; overrides scan.model.paths).")
def model(config_path: Path | None, out_dir: Path, quiet: bool, force: bool,
          waivers: Path | None, fail_on: str | None, paths: tuple[Path, ...]) -> None:
    """Scan model files for pickles that run code on load, and malformed safetensors/ONNX."""
    _run("model", config_path, out_dir, quiet, force, fail_on, waivers,
         {"paths": tuple(_abs(p) for p in paths)})


@scan.command("dast")
@_scan_options
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
def dast(config_path: Path | None, out_dir: Path, quiet: bool, force: bool,
         waivers: Path | None, fail_on: str | None, target: str | None,
         model_path: Path | None, zap_url: str | None, zap_api_key_env: str | None,
         zap_report: Path | None, rules_path: Path | None, active: bool | None,
         timeout_s: float | None) -> None:
    """Scan a running model endpoint with ZAP (given a daemon) or the built-in engine."""
    from ci_ml.scan.dast import with_cli_options

    config = with_cli_options(load_config(config_path), target=target, model=model_path,
                              zap_url=zap_url, zap_api_key_env=zap_api_key_env,
                              zap_report=zap_report, rules=rules_path, active=active,
                              timeout_s=timeout_s)
    _finish("dast", config, out_dir, quiet, force, fail_on, waivers, {})


def _add_generic(name: str) -> None:
    """A plain ``ci-ml scan <name>`` for a registered scanner without its own options."""

    @scan.command(name, help=f"Run the {name} scan (configured under scan.{name}).")
    @_scan_options
    def command(config_path: Path | None, out_dir: Path, quiet: bool, force: bool,
                waivers: Path | None, fail_on: str | None) -> None:
        _run(name, config_path, out_dir, quiet, force, fail_on, waivers, {})


for _name in SCANNERS:
    if _name not in scan.commands:
        _add_generic(_name)

COMMANDS = (scan,)
