"""``python -m ci_ml.serve``: the container's entry point (no click, no config loader).

Settings come from a JSON file written by ``ci-ml deploy build``; ``CI_ML_SERVE_HOST``
and ``CI_ML_SERVE_PORT`` (or --host/--port) override the address at run time.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from ci_ml.errors import EXIT_USAGE, CiMlError
from ci_ml.serve.settings import ServeSettings


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ci_ml.serve",
                                     description="Serve an exported ONNX model over HTTP.")
    parser.add_argument("--model", required=True, type=Path, help="model.onnx (model.json beside)")
    parser.add_argument("--settings", type=Path, help="server settings JSON")
    parser.add_argument("--host", default=os.environ.get("CI_ML_SERVE_HOST"))
    parser.add_argument("--port", type=int, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    port = args.port
    if port is None and os.environ.get("CI_ML_SERVE_PORT"):
        try:
            port = int(os.environ["CI_ML_SERVE_PORT"])
        except ValueError:
            print("error: CI_ML_SERVE_PORT is not a number", file=sys.stderr)
            return EXIT_USAGE
    try:
        from ci_ml.serve.model import ServedModel
        from ci_ml.serve.server import create_server, serve_until_signalled

        settings = ServeSettings.read(args.settings) if args.settings else ServeSettings()
        settings = settings.with_address(args.host, port)
        model = ServedModel(args.model, threads=settings.threads)
        server = create_server(model, settings)
    except CiMlError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    logging.getLogger("ci_ml.serve").info("serving %s on %s", args.model.name, server.url)
    serve_until_signalled(server)
    return 0


if __name__ == "__main__":
    sys.exit(main())
