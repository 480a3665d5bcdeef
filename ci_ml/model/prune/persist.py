"""Pickle-free persistence: torch-pruning's history as JSON plus safetensors weights."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from ci_ml.errors import InputError
from ci_ml.model.prune.channels import normalize_history, quiet_logs
from ci_ml.model.run_manifest import package_versions
from ci_ml.model.zoo import ModelSpec, build_model

HISTORY_FILE = "pruning-history.json"
WEIGHTS_FILE = "model.safetensors"
HISTORY_FORMAT = "ci-ml/pruning-history/1"


def save_pruned(
    model: nn.Module,
    history: Sequence[Sequence[Any]],
    directory: Path,
    *,
    spec: ModelSpec | None = None,
) -> tuple[Path, Path]:
    """Write ``pruning-history.json`` and ``model.safetensors`` (no pickle) to ``directory``."""
    from safetensors.torch import save_model

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    hist = normalize_history(history)
    doc = {
        "format": HISTORY_FORMAT,
        "torch_pruning": package_versions("torch-pruning")["torch-pruning"],
        "spec": spec.to_json() if spec else None,
        "history": [[name, is_out, list(idxs)] for name, is_out, idxs in hist],
    }
    hist_path = directory / HISTORY_FILE
    hist_path.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    weights = directory / WEIGHTS_FILE
    save_model(model, str(weights), metadata={"format": HISTORY_FORMAT})
    return hist_path, weights


def load_pruned(spec: ModelSpec, directory: Path, project_dir: Path | None = None) -> nn.Module:
    """Rebuild the base model from ``spec``, replay the pruning history, load the weights."""
    from safetensors.torch import load_model

    directory = Path(directory)
    hist_path, weights = directory / HISTORY_FILE, directory / WEIGHTS_FILE
    for f in (hist_path, weights):
        if not f.is_file():
            raise InputError(f"pruned model: {f} is missing")
    try:
        doc = json.loads(hist_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"pruned model: cannot read {hist_path}: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != HISTORY_FORMAT:
        raise InputError(f"pruned model: {hist_path} is not a {HISTORY_FORMAT} file")
    saved_spec = doc.get("spec")
    if saved_spec is not None and ModelSpec.from_json(saved_spec) != spec:
        raise InputError(f"pruned model: {hist_path} was saved for model "
                         f"{saved_spec.get('name')!r} {saved_spec}, not for {spec.to_json()}")
    history = normalize_history(doc.get("history"))
    model = build_model(spec, project_dir).eval()
    if history:
        try:
            with quiet_logs():
                dg = tp.DependencyGraph().build_dependency(
                    model, example_inputs=torch.zeros(2, *spec.input_shape), verbose=False)
                dg.load_pruning_history([[n, o, list(i)] for n, o, i in history])
        except Exception as exc:
            raise InputError(f"pruned model: cannot replay the pruning history on "
                             f"{spec.name!r}: {type(exc).__name__}: {exc}"[:400]) from exc
    try:
        load_model(model, str(weights), strict=True)
    except Exception as exc:
        raise InputError(f"pruned model: weights in {weights} do not fit the pruned "
                         f"architecture: {exc}"[:400]) from exc
    return model.eval()
