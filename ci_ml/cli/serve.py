"""``ci-ml serve``: the model server in the foreground, until SIGTERM or Ctrl-C."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import click

from ci_ml.artifacts import CANDIDATE_ONNX
from ci_ml.cli.common import common_options
from ci_ml.config import Config, apply_defaults, config_schema, find_config, load_config
from ci_ml.errors import ConfigError
from ci_ml.extras import require


def serve_section(config_path: Path | None,
                  need_config: bool) -> tuple[dict[str, Any], Path | None]:
    """The config's ``serve`` section; the schema's defaults when there is no config file
    and none is needed."""
    try:
        find_config(config_path)
    except ConfigError:
        if need_config:
            raise
        defaults = apply_defaults({"serve": {}}, config_schema())
        return dict(defaults["serve"]), None
    config: Config = load_config(config_path)
    return dict(config.section("serve")), config.root


def resolve_model(explicit: Path | None, section: dict[str, Any], root: Path | None,
                  out_dir: Path) -> Path:
    if explicit is not None:
        return explicit
    if section.get("model") and root is not None:
        return (root / str(section["model"])).resolve()
    return out_dir / CANDIDATE_ONNX


@click.command()
@click.option("--model", "model_path", type=click.Path(path_type=Path), default=None,
              help="ONNX model with model.json beside it (default: serve.model, else "
                   "<out>/candidate/model.onnx).")
@click.option("--host", default=None, help="Address to bind (default: serve.host, 127.0.0.1).")
@click.option("--port", type=click.IntRange(0, 65535), default=None,
              help="Port (default: serve.port, 8080; 0 picks a free one).")
@click.option("--workers", type=click.IntRange(0, 64), default=None,
              help="Worker processes (default: serve.workers; 0: one per CPU).")
@common_options
def serve(model_path: Path | None, host: str | None, port: int | None, workers: int | None,
          config_path: Path | None, out_dir: Path, quiet: bool) -> None:
    """Serve the exported ONNX model over HTTP: /predict, the Open Inference Protocol (/v2),
    /metrics, /health, /ready, /openapi.json.

    Runs until SIGTERM or Ctrl-C, then drains in-flight requests. Without a config
    file, --model is required and the server uses the schema's defaults.
    """
    require("serve", "ci-ml serve")
    from dataclasses import replace

    from ci_ml.serve.server import serve_forever
    from ci_ml.serve.settings import ServeSettings

    section, root = serve_section(config_path, need_config=model_path is None)
    settings = ServeSettings.from_section(section, root).with_address(host, port)
    if workers is not None:
        settings = replace(settings, workers=workers)
    model = resolve_model(model_path, section, root, out_dir)
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(message)s")

    def announce(url: str, n: int) -> None:
        # One line on stdout that scripts can wait for; everything else goes to stderr.
        click.echo(f"serving {model} with {n} worker{'s' * (n > 1)} on {url}")
        sys.stdout.flush()

    served = serve_forever(model, settings, on_ready=announce)
    if served >= 0:
        click.echo(f"stopped after {served} prediction request(s)", err=True)
    else:
        click.echo("stopped", err=True)


COMMANDS = (serve,)
