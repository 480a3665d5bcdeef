"""``ci-ml deploy``: the model server's container image and its Kubernetes manifests."""

from __future__ import annotations

from pathlib import Path

import click

from ci_ml.cli.common import common_options
from ci_ml.config import load_config
from ci_ml.console import Reporter


@click.group()
def deploy() -> None:
    """Build the model-server image or render Kubernetes manifests."""


@deploy.command("render")
@click.option("--stable", "stable", type=click.IntRange(min=1), metavar="VERSION",
              help="Registry version for the stable Deployment (default: production's).")
@click.option("--canary", "canary", type=click.IntRange(min=1), metavar="VERSION",
              help="Registry version for the canary (default: staging's).")
@click.option("--canary-weight", type=click.IntRange(1, 99), metavar="PERCENT",
              help="Share of traffic for the canary (default: deploy.kubernetes.canary.weight).")
@click.option("--no-canary", is_flag=True, help="Render the stable workload only.")
@click.option("--no-validate", is_flag=True,
              help="Skip kubernetes-validate and trivy config (not for CI).")
@common_options
def deploy_render(stable: int | None, canary: int | None, canary_weight: int | None,
                  no_canary: bool, no_validate: bool, config_path: Path | None, out_dir: Path,
                  quiet: bool) -> None:
    """Render Kubernetes manifests into --out/k8s and validate them offline.

    Deployment, Service, HorizontalPodAutoscaler, PodDisruptionBudget, NetworkPolicy and,
    when staging holds a different model than production, a canary. Exit 1 if trivy config
    finds a HIGH or CRITICAL misconfiguration, 2 if a manifest fails the Kubernetes schema.
    """
    from ci_ml.deploy.render import make_plan, render_to
    from ci_ml.registry.backends import open_registry

    config = load_config(config_path)
    reporter = Reporter(quiet=quiet)
    state = open_registry(config).state()
    plan = make_plan(config, state, stable=stable, canary=canary,
                     canary_enabled=False if no_canary else None, weight=canary_weight)
    if plan.note:
        reporter.info(plan.note)
    result = render_to(config, out_dir, plan, validate=not no_validate)
    others = len(result.misconfigs)
    checks = ("not validated (--no-validate)" if no_validate else
              f"valid against Kubernetes {result.schema_version} schemas; trivy config: "
              f"no HIGH/CRITICAL" + (f" ({others} lower finding(s))" if others else ", clean"))
    canary_text = (f"; canary v{plan.canary.version} at {plan.effective_weight:.0f}% "
                   f"({plan.mode})" if plan.canary else "")
    click.echo(f"rendered {len(result.files)} manifests to {result.directory}: stable "
               f"v{plan.stable.version}{canary_text}; {checks}")


COMMANDS = (deploy,)
