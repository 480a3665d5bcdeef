"""Reproducible PyTorch training from the config.

Reproducibility comes from: a seeded ``torch.Generator`` for init and shuffling,
``torch.use_deterministic_algorithms(True)``, and a fixed intra-op thread count
(float reductions split across a different number of threads sum differently).
The same inputs on the same machine give the same weights, byte for byte.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ci_ml.data.loader import DataBundle, Split
from ci_ml.errors import InputError
from ci_ml.model.metrics import classification_metrics
from ci_ml.model.zoo import ModelSpec, build_model

ProgressFn = Callable[[int, int, str], None]


@dataclass(frozen=True)
class TrainSettings:
    epochs: int = 10
    batch_size: int = 64
    learning_rate: float = 1e-3
    optimizer: str = "adam"
    weight_decay: float = 0.0
    momentum: float = 0.9
    seed: int = 0
    threads: int = 1
    validation_fraction: float = 0.1
    patience: int | None = None
    min_delta: float = 0.0

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> TrainSettings:
        early = section.get("early_stopping") or {}
        return cls(
            epochs=int(section["epochs"]), batch_size=int(section["batch_size"]),
            learning_rate=float(section["learning_rate"]), optimizer=str(section["optimizer"]),
            weight_decay=float(section["weight_decay"]), momentum=float(section["momentum"]),
            seed=int(section["seed"]), threads=int(section["threads"]),
            validation_fraction=float(section["validation_fraction"]),
            patience=int(early["patience"]) if early else None,
            min_delta=float(early.get("min_delta", 0.0)) if early else 0.0,
        )


@dataclass(frozen=True)
class EpochStats:
    epoch: int
    train_loss: float
    val_loss: float
    val_accuracy: float


@dataclass(frozen=True)
class TrainResult:
    model: nn.Module
    spec: ModelSpec
    history: tuple[EpochStats, ...]
    metrics: Mapping[str, Any]
    best_epoch: int
    stopped_early: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)


def make_deterministic(seed: int, threads: int) -> torch.Generator:
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    return torch.Generator().manual_seed(seed)


def make_optimizer(model: nn.Module, s: TrainSettings) -> torch.optim.Optimizer:
    params = model.parameters()
    if s.optimizer == "sgd":
        return torch.optim.SGD(params, lr=s.learning_rate, momentum=s.momentum,
                               weight_decay=s.weight_decay)
    if s.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=s.learning_rate, weight_decay=s.weight_decay)
    return torch.optim.Adam(params, lr=s.learning_rate, weight_decay=s.weight_decay)


def validation_split(split: Split, fraction: float, seed: int) -> tuple[Split, Split | None]:
    """A seeded hold-out from the training data for early stopping and curves."""
    n_val = int(round(len(split.y) * fraction))
    if n_val < 1 or n_val >= len(split.y):
        return split, None
    order = np.random.default_rng(seed).permutation(len(split.y))
    val, tr = order[:n_val], order[n_val:]
    return Split(split.x[tr], split.y[tr]), Split(split.x[val], split.y[val])


@torch.no_grad()
def predict(model: nn.Module, x: np.ndarray, batch_size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Logits and predicted classes for a numpy batch."""
    model.eval()
    outs = [model(torch.from_numpy(x[i:i + batch_size])) for i in range(0, len(x), batch_size)]
    logits = torch.cat(outs) if outs else torch.empty(0)
    return logits.numpy(), logits.argmax(dim=1).numpy()


def evaluate_model(model: nn.Module, split: Split, classes: tuple[str, ...]) -> dict[str, Any]:
    logits, pred = predict(model, split.x)
    loss = float(nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(split.y)))
    return classification_metrics(split.y, pred, classes, loss=loss)


def train_epoch(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                batch_size: int, generator: torch.Generator) -> float:
    model.train()
    order = torch.randperm(len(y), generator=generator)
    total, seen = 0.0, 0
    for i in range(0, len(order), batch_size):
        idx = order[i:i + batch_size]
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        if not torch.isfinite(loss):
            raise InputError(
                f"training diverged: loss became {loss.item()} at sample {i}; "
                "lower train.learning_rate or check the data for extreme values"
            )
        loss.backward()
        opt.step()
        total += loss.item() * len(idx)
        seen += len(idx)
    return total / max(seen, 1)


def train_model(bundle: DataBundle, spec: ModelSpec, s: TrainSettings,
                progress: ProgressFn | None = None, project_dir: Any = None) -> TrainResult:
    generator = make_deterministic(s.seed, s.threads)
    model = build_model(spec, project_dir)
    train_split, val_split = validation_split(bundle.split("train"), s.validation_fraction, s.seed)
    test_split = bundle.split("test")
    x, y = torch.from_numpy(train_split.x), torch.from_numpy(train_split.y)
    try:
        with torch.no_grad():
            out = model.eval()(x[:2])
    except RuntimeError as exc:
        raise InputError(
            f"data of shape {list(x.shape[1:])} does not fit model {spec.name!r}: "
            f"{str(exc).splitlines()[0]}"
        ) from exc
    if out.ndim != 2 or out.shape[1] != spec.num_classes:
        raise InputError(f"model {spec.name!r} outputs shape {list(out.shape[1:])}, "
                         f"expected [{spec.num_classes}] class scores")
    opt = make_optimizer(model, s)
    history: list[EpochStats] = []
    best_state, best_loss, best_epoch, bad_epochs = None, math.inf, 0, 0
    stopped = False
    for epoch in range(1, s.epochs + 1):
        train_loss = train_epoch(model, opt, x, y, s.batch_size, generator)
        monitor = val_split or test_split
        val = evaluate_model(model, monitor, bundle.classes)
        history.append(EpochStats(epoch, train_loss, val["loss"], val["accuracy"]))
        if progress:
            progress(epoch, s.epochs, f"loss {train_loss:.4f} val_loss {val['loss']:.4f} "
                                      f"val_acc {val['accuracy']:.4f}")
        if s.patience is not None:
            if val["loss"] < best_loss - s.min_delta:
                best_loss, best_epoch, bad_epochs = val["loss"], epoch, 0
                best_state = {k: v.clone() for k, v in model.state_dict().items()}
            else:
                bad_epochs += 1
                if bad_epochs >= s.patience:
                    stopped = True
                    break
    if best_state is not None:
        model.load_state_dict(best_state)
    else:
        best_epoch = len(history)
    metrics = evaluate_model(model, test_split, bundle.classes)
    return TrainResult(model, spec, tuple(history), metrics, best_epoch, stopped)
