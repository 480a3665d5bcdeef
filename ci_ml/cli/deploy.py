"""``ci-ml deploy``: the model server's container image and its Kubernetes manifests."""

from __future__ import annotations

from pathlib import Path

import click

from ci_ml.cli.common import common_options
from ci_ml.config import load_config
from ci_ml.console import Reporter
from ci_ml.extras import require


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
    require("deploy", "ci-ml deploy render")
    from ci_ml.deploy.render import make_plan, render_to
    from ci_ml.registry.backends import open_registry

    config = load_config(config_path)
    reporter = Reporter(quiet=quiet)
    state = open_registry(config).state()
    plan = make_plan(config, state, stable=stable, canary=canary,
                     canary_enabled=False if no_canary else None, weight=canary_weight,
                     out_dir=out_dir)
    if config.section("deploy")["kubernetes"].get("model_from") == "oci":
        from ci_ml.registry.backends import model_references

        plan = model_references(config, state, plan)
    if plan.note:
        reporter.info(plan.note)
    result = render_to(config, out_dir, plan, validate=not no_validate)
    others = len(result.misconfigs)
    checks = ("not validated (--no-validate)" if no_validate else
              f"valid against Kubernetes {result.schema_version} schemas; trivy config: "
              f"no HIGH/CRITICAL" + (f" ({others} lower finding(s))" if others else ", clean"))
    canary_text = (f"; canary v{plan.canary.version} ({plan.canary.image}) at "
                   f"{plan.effective_weight:.0f}% ({plan.mode})" if plan.canary else "")
    click.echo(f"rendered {len(result.files)} manifests to {result.directory}: stable "
               f"v{plan.stable.version} ({plan.stable.image}){canary_text}; {checks}")
    click.echo(f"alerting rules for the monitor's SLOs in {out_dir / 'alerts'} "
               + ("(not checked)" if no_validate else "(promtool check rules: ok)"))


@deploy.command("build")
@click.option("--model", "model_path", type=click.Path(path_type=Path), default=None,
              help="ONNX model with model.json beside it (default: serve.model, else "
                   "<out>/candidate/model.onnx).")
@click.option("--image", "image_name", default=None,
              help="Image name (default: deploy.image, else ci-ml/<project>).")
@click.option("--tag", default=None,
              help="Image tag (default: deploy.tag, else the model's sha256 prefix).")
@click.option("--context-only", is_flag=True,
              help="Write the build context and Dockerfile to <out>/image/ without building.")
@click.option("--push/--no-push", default=None,
              help="Push the image to the registry its name points at and record its digest, "
                   "which `deploy render` pins (default: deploy.push).")
@common_options
def build(model_path: Path | None, image_name: str | None, tag: str | None, context_only: bool,
          push: bool | None, config_path: Path | None, out_dir: Path, quiet: bool) -> None:
    """Build the model server's container image with the Docker engine; writes image.json.

    The image holds onnxruntime, numpy and ci-ml's server only, runs as a non-root user
    and checks /health. Its reference is the one `deploy render` gives this model:
    deploy.image (default ci-ml/<project>) tagged deploy.tag (default 12 hex digits of
    the model's registry digest). Exit 3 if Docker or the base image is missing.
    """
    require("deploy", "ci-ml deploy build")
    from ci_ml.cli.serve import resolve_model
    from ci_ml.config import load_config
    from ci_ml.deploy.image import (
        CONTEXT_DIR,
        build_image,
        image_spec,
        push_image,
        render_context,
        write_record,
    )
    from ci_ml.pipeline.runner import check_out_dir
    from ci_ml.registry.interface import ModelIdentity
    from ci_ml.serve.model import ServedModel
    from ci_ml.serve.settings import ServeSettings

    config = load_config(config_path)
    check_out_dir(out_dir)
    serve = dict(config.section("serve"))
    model_file = resolve_model(model_path, serve, config.root, out_dir)
    model = ServedModel(model_file)   # validates the artifact before any build
    # The candidate of this --out has the digest the registry will give it (the tag that
    # `deploy render` expects); another model file is known by its own content hash.
    identity = ModelIdentity.try_from_out_dir(out_dir) if model_path is None else None
    digest = identity.digest if identity else f"sha256:{model.sha256}"
    section = config.section("deploy")
    spec = image_spec(section, config.project_name, model.path, digest, image_name, tag)
    settings = ServeSettings.from_section(serve, config.root)
    context = render_context(spec, settings, model.sha256, config.project_name,
                             out_dir / CONTEXT_DIR)
    if context_only:
        click.echo(f"wrote build context {context} (Dockerfile for {spec.ref})")
        return
    if not quiet:
        click.echo(f"building {spec.ref} from {spec.base_image} ...", err=True)
    built = build_image(context, spec, model.sha256)
    if section.get("push", False) if push is None else push:
        built = push_image(spec, built)
    record = write_record(out_dir, built, spec)
    pushed = f", pushed as {spec.name}@{built.repo_digest}" if built.repo_digest else ""
    click.echo(f"built {built.ref} ({built.size_bytes / 1e6:.0f} MB, {built.id[:19]}){pushed}; "
               f"wrote {record}")


COMMANDS = (deploy,)
