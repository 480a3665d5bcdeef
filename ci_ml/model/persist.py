"""Saving and loading models without pickle: a JSON spec plus safetensors weights.

``model.json`` says how to rebuild the architecture (zoo name or factory, input
shape, classes, feature scale); ``model.safetensors`` holds the tensors. Loading
never unpickles, so a model file from anywhere cannot run code on load.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ci_ml.errors import InputError
from ci_ml.fsutil import atomic_write_json, sha256_file
from ci_ml.model.zoo import ModelSpec, build_model

WEIGHTS = "model.safetensors"
PRUNING_HISTORY = "pruning-history.json"
SPEC = "model.json"
PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".bin", ".ckpt", ".joblib")


@dataclass(frozen=True)
class ModelCard:
    spec: ModelSpec
    classes: tuple[str, ...]
    scale: float
    features: tuple[str, ...]
    # Inputs are raw feature values: divided by ``scale``, then standardized if mean/std are set.
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"format": "ci-ml/1", "spec": self.spec.to_json(), "classes": list(self.classes),
                "scale": self.scale, "features": list(self.features),
                "mean": list(self.mean) if self.mean else None,
                "std": list(self.std) if self.std else None}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelCard:
        mean, std = data.get("mean"), data.get("std")
        return cls(ModelSpec.from_json(data["spec"]), tuple(str(c) for c in data["classes"]),
                   float(data["scale"]), tuple(str(f) for f in data.get("features", ())),
                   tuple(float(v) for v in mean) if mean else None,
                   tuple(float(v) for v in std) if std else None)


def save_model(model: nn.Module, card: ModelCard, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    save_file(state, str(directory / WEIGHTS), metadata={"format": "pt"})
    # The spec pins the weights by hash: a flipped byte in the tensor data parses as
    # valid safetensors, so only the hash can tell a corrupted file from a good one.
    atomic_write_json(directory / SPEC,
                      {**card.to_json(), "weights_sha256": sha256_file(directory / WEIGHTS)})


def looks_like_pickle(path: Path) -> bool:
    """By content, not by name: torch.save's zip (with a data.pkl) or a raw pickle stream."""
    if not path.is_file():
        return False
    with open(path, "rb") as fh:
        head = fh.read(2)
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return True  # PROTO opcode: pickle protocol 2-5 (torch's legacy format starts so too)
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as zf:
                return any(n.endswith(".pkl") for n in zf.namelist())
        except (zipfile.BadZipFile, OSError):
            return False
    return False


def refuse_pickle(path: Path) -> None:
    """Explain why a pickle-based checkpoint is not loaded, instead of loading it."""
    if path.suffix in PICKLE_SUFFIXES or looks_like_pickle(path):
        raise InputError(
            f"{path}: refusing a pickle-based checkpoint (torch.save / pickle): loading a "
            "pickle can execute code, and torch.load(weights_only=True) still runs the pickle "
            "machine on untrusted bytes; save the weights with safetensors "
            "(ci-ml's model/ directory, or safetensors.torch.save_file) or export to ONNX"
        )


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
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{directory / SPEC}: not a valid model spec ({exc})") from exc
    if (directory / PRUNING_HISTORY).is_file():
        # A pruned model: rebuild the base from the spec, replay the recorded pruning.
        from ci_ml.model.prune.persist import load_pruned

        pruned = load_pruned(card.spec, directory, project_dir)
        pruned.eval()
        return pruned, card
    model = build_model(card.spec, project_dir)
    state = load_weights(directory / WEIGHTS, spec_json.get("weights_sha256"))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise InputError(f"{directory / WEIGHTS}: weights do not fit the model ({first})") from exc
    model.eval()
    return model, card
