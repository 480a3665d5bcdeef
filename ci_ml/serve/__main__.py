"""``python -m ci_ml.serve``: the container's entry point (no click, no config loader).

Settings come from a JSON file written by ``ci-ml deploy build``; ``CI_ML_SERVE_HOST``,
``CI_ML_SERVE_PORT`` and ``CI_ML_SERVE_WORKERS`` (or --host/--port/--workers) override
them at run time.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from ci_ml.errors import CiMlError, UsageError
from ci_ml.serve.settings import ServeSettings


def _env_int(name: str) -> int | None:
    text = os.environ.get(name)
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise UsageError(f"{name} is not a number") from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ci_ml.serve",
                                     description="Serve an exported ONNX model over HTTP.")
    parser.add_argument("--model", required=True, type=Path, help="model.onnx (model.json beside)")
    parser.add_argument("--settings", type=Path, help="server settings JSON")
    parser.add_argument("--host", default=os.environ.get("CI_ML_SERVE_HOST"))
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--workers", type=int, default=None, help="worker processes (0: one "
                        "per CPU)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        port = args.port if args.port is not None else _env_int("CI_ML_SERVE_PORT")
        workers = args.workers if args.workers is not None else _env_int("CI_ML_SERVE_WORKERS")
        from dataclasses import replace

        from ci_ml.serve.server import serve_forever

        settings = ServeSettings.read(args.settings) if args.settings else ServeSettings()
        settings = settings.with_address(args.host, port)
        if workers is not None:
            settings = replace(settings, workers=workers)
        if settings.version is None and os.environ.get("CI_ML_MODEL_VERSION"):
            # The rendered Kubernetes manifests name the registry version they deploy.
            settings = replace(settings, version=os.environ["CI_ML_MODEL_VERSION"])

        def ready(url: str, n: int) -> None:
            logging.getLogger("ci_ml.serve").info("serving %s with %d worker%s on %s",
                                                  args.model.name, n, "s" * (n > 1), url)

        serve_forever(args.model, settings, on_ready=ready)
    except CiMlError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
