"""``ci-ml deploy``: the model server's container image and its Kubernetes manifests."""

from __future__ import annotations

from pathlib import Path

import click

from ci_ml.cli.common import common_options


@click.group()
def deploy() -> None:
    """Build the model-server image or render Kubernetes manifests."""


@deploy.command("build")
@click.option("--model", "model_path", type=click.Path(path_type=Path), default=None,
              help="ONNX model with model.json beside it (default: serve.model, else "
                   "<out>/pruned/model.onnx).")
@click.option("--image", "image_name", default=None,
              help="Image name (default: deploy.image, else ci-ml/<project>).")
@click.option("--tag", default=None,
              help="Image tag (default: deploy.tag, else the model's sha256 prefix).")
@click.option("--context-only", is_flag=True,
              help="Write the build context and Dockerfile to <out>/image/ without building.")
@common_options
def build(model_path: Path | None, image_name: str | None, tag: str | None, context_only: bool,
          config_path: Path | None, out_dir: Path, quiet: bool) -> None:
    """Build the model server's container image with the Docker engine; writes image.json.

    The image holds onnxruntime, numpy and ci-ml's server only, runs as a non-root user
    and checks /health. Exit 3 if Docker or the base image is missing.
    """
    from ci_ml.cli.serve import resolve_model
    from ci_ml.config import load_config
    from ci_ml.deploy.image import (
        CONTEXT_DIR,
        build_image,
        image_spec,
        render_context,
        write_record,
    )
    from ci_ml.pipeline.runner import check_out_dir
    from ci_ml.serve.model import ServedModel
    from ci_ml.serve.settings import ServeSettings

    config = load_config(config_path)
    check_out_dir(out_dir)
    serve = dict(config.section("serve"))
    model_file = resolve_model(model_path, serve, config.root, out_dir)
    model = ServedModel(model_file)   # validates the artifact before any build
    spec = image_spec(config.section("deploy"), config.project_name, model.path, model.sha256,
                      image_name, tag)
    settings = ServeSettings.from_section(serve, config.root)
    context = render_context(spec, settings, model.sha256, config.project_name,
                             out_dir / CONTEXT_DIR)
    if context_only:
        click.echo(f"wrote build context {context} (Dockerfile for {spec.ref})")
        return
    if not quiet:
        click.echo(f"building {spec.ref} from {spec.base_image} ...", err=True)
    built = build_image(context, spec, model.sha256)
    record = write_record(out_dir, built, spec)
    click.echo(f"built {built.ref} ({built.size_bytes / 1e6:.0f} MB, {built.id[:19]}); "
               f"wrote {record}")


COMMANDS = (deploy,)
