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
from ci_ml.fsutil import atomic_write_json
from ci_ml.model.zoo import ModelSpec, build_model

WEIGHTS = "model.safetensors"
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
    atomic_write_json(directory / SPEC, card.to_json())


def refuse_pickle(path: Path) -> None:
    """Explain why a pickle-based checkpoint is not loaded, instead of loading it."""
    is_zip_pickle = zipfile.is_zipfile(path)
    head = path.read_bytes()[:2] if path.is_file() else b""
    if path.suffix in PICKLE_SUFFIXES or is_zip_pickle or head[:1] == b"\x80":
        raise InputError(
            f"{path}: refusing a pickle-based checkpoint (loading a pickle can execute code); "
            "export the weights to safetensors (safetensors.torch.save_file) or ONNX"
        )


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise InputError(f"{path}: model weights not found")
    if path.suffix != ".safetensors":
        refuse_pickle(path)
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise InputError(f"{path}: corrupted or not a safetensors file ({exc})") from exc


def load_model(directory_or_file: Path, project_dir: Path | None = None) -> tuple[nn.Module, ModelCard]:
    """Rebuild a saved model. Accepts the model directory, its model.json or its weights."""
    p = directory_or_file
    directory = p if p.is_dir() else p.parent
    if p.is_file() and p.suffix not in (".safetensors", ".json"):
        refuse_pickle(p)
        raise InputError(f"{p}: not a ci-ml model (expected a directory with {SPEC} and {WEIGHTS})")
    try:
        card = ModelCard.from_json(json.loads((directory / SPEC).read_text("utf-8")))
    except FileNotFoundError:
        raise InputError(f"{directory}: no {SPEC} (a ci-ml model directory holds {SPEC} "
                         f"and {WEIGHTS})") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{directory / SPEC}: not a valid model spec ({exc})") from exc
    model = build_model(card.spec, project_dir)
    state = load_weights(directory / WEIGHTS)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise InputError(f"{directory / WEIGHTS}: weights do not fit the model ({first})") from exc
    model.eval()
    return model, card
