"""Saving and loading models without pickle: a JSON card plus safetensors weights.

``model.json`` (the card, ``ci_ml.model.card``) says how to rebuild the architecture
(zoo name or factory, input shape) and what the model takes and answers;
``model.safetensors`` holds the tensors. Loading never unpickles, so a model file
from anywhere cannot run code on load.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ci_ml.errors import InputError
from ci_ml.fsutil import atomic_write_json, sha256_file
from ci_ml.model.card import CARD, WEIGHTS, ModelCard
from ci_ml.model.safety import PICKLE_SUFFIXES, looks_like_pickle, refuse_pickle
from ci_ml.model.zoo import build_model, card_spec

PRUNING_HISTORY = "pruning-history.json"
SPEC = CARD


def save_model(model: nn.Module, card: ModelCard, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    save_file(state, str(directory / WEIGHTS), metadata={"format": "pt"})
    # The spec pins the weights by hash: a flipped byte in the tensor data parses as
    # valid safetensors, so only the hash can tell a corrupted file from a good one.
    atomic_write_json(directory / SPEC,
                      {**card.to_json(), "weights_sha256": sha256_file(directory / WEIGHTS)})


def load_weights(path: Path, expected_sha256: str | None = None) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise InputError(f"{path}: model weights not found")
    if path.suffix != ".safetensors" or looks_like_pickle(path):
        refuse_pickle(path)
    if expected_sha256 and sha256_file(path) != expected_sha256:
        raise InputError(f"{path}: corrupted or replaced: its sha256 differs from the "
                         f"weights_sha256 recorded in {SPEC}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise InputError(f"{path}: corrupted or not a safetensors file ({exc})") from exc


def load_model(directory_or_file: Path,
               project_dir: Path | None = None) -> tuple[nn.Module, ModelCard]:
    """Rebuild a saved model. Accepts the model directory, its model.json or its weights."""
    p = directory_or_file
    if not p.exists():
        raise InputError(f"{p}: model not found")
    directory = p if p.is_dir() else p.parent
    if p.is_file() and p.suffix not in (".safetensors", ".json"):
        refuse_pickle(p)
        raise InputError(f"{p}: not a ci-ml model (expected a directory with {SPEC} and {WEIGHTS})")
    if not (directory / SPEC).is_file():
        for candidate in sorted(directory.iterdir()):
            if candidate.is_file() and candidate.suffix in PICKLE_SUFFIXES:
                refuse_pickle(candidate)
    try:
        spec_json = json.loads((directory / SPEC).read_text("utf-8"))
        if not isinstance(spec_json, dict):
            raise TypeError(f"expected a JSON object, got {type(spec_json).__name__}")
        card = ModelCard.from_json(spec_json)
    except FileNotFoundError:
        raise InputError(f"{directory}: no {SPEC} (a ci-ml model directory holds {SPEC} "
                         f"and {WEIGHTS})") from None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InputError(f"{directory / SPEC}: not a valid model card ({exc})") from exc
    if (directory / PRUNING_HISTORY).is_file():
        # A pruned model: rebuild the base from the spec, replay the recorded pruning.
        from ci_ml.model.prune.persist import load_pruned

        pruned = load_pruned(card_spec(card), directory, project_dir)
        pruned.eval()
        return pruned, card
    model = build_model(card_spec(card), project_dir)
    state = load_weights(directory / WEIGHTS, spec_json.get("weights_sha256"))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise InputError(f"{directory / WEIGHTS}: weights do not fit the model ({first})") from exc
    model.eval()
    return model, card
