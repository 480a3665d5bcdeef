"""``ci-ml evaluate``: metrics of another model (e.g. production's) on the config's test set."""

from __future__ import annotations

from pathlib import Path

import click

from ci_ml.cli.common import common_options
from ci_ml.config import load_config
from ci_ml.extras import require
from ci_ml.fsutil import atomic_write_json
from ci_ml.pipeline.runner import check_out_dir

# ci_ml.model.evaluate imports torch: only when the command runs, not for `ci-ml --help`.
EVALUATION = "evaluation.json"


@click.command()
@click.option("--model", "model_path", required=True, type=click.Path(path_type=Path),
              help="A ci-ml model directory (model.json + model.safetensors) or an ONNX file.")
@click.option("--output", "output", type=click.Path(path_type=Path), default=None,
              help=f"Write the metrics here instead of <out>/{EVALUATION}.")
@common_options
def evaluate(model_path: Path, output: Path | None, config_path: Path | None, out_dir: Path,
             quiet: bool) -> None:
    """Compute metrics.json's metrics for another model on the config's test set.

    Pickle-based checkpoints (torch.save, .pt/.pth/.pkl) are refused: loading them can run code.
    """
    require("train", "ci-ml evaluate")
    from ci_ml.model.evaluate import evaluate_path

    config = load_config(config_path)
    target = output if output is not None else out_dir / EVALUATION
    check_out_dir(target.parent)
    result = evaluate_path(model_path, config)
    atomic_write_json(target, result)
    click.echo(f"accuracy {result['accuracy']:.4f}, macro_f1 {result['macro_f1']:.4f} "
               f"on {result['samples']} test samples; wrote {target}")


COMMANDS = (evaluate,)
