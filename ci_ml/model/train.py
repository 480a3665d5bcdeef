"""Reproducible PyTorch training from the config.

Reproducibility comes from: a seeded ``torch.Generator`` for init and shuffling,
``torch.use_deterministic_algorithms(True)``, and a fixed intra-op thread count
(float reductions split across a different number of threads sum differently).
The same inputs on the same machine give the same weights, byte for byte.

The loop (``fit``) runs in one process or as one rank of a DDP process group
(``ci_ml.model.distributed``): a ``Group`` is all it needs to know about the others.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from ci_ml.data.loader import DataBundle, Split
from ci_ml.errors import ConfigError, InputError
from ci_ml.model.metrics import classification_metrics, regression_metrics
from ci_ml.model.zoo import ModelSpec, build_model

ProgressFn = Callable[[int, int, str], None]

# What rank 0 tells every rank after each epoch (one broadcast integer).
CONTINUE, STOP, DIVERGED = 0, 1, 2


@dataclass(frozen=True)
class TrainSettings:
    epochs: int = 10
    batch_size: int = 64
    accumulation_steps: int = 1
    learning_rate: float = 1e-3
    optimizer: str = "adam"
    weight_decay: float = 0.0
    momentum: float = 0.9
    seed: int = 0
    threads: int = 1
    validation_fraction: float = 0.1
    patience: int | None = None
    min_delta: float = 0.0
    nproc: int = 1

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> TrainSettings:
        early = section.get("early_stopping") or {}
        return cls(
            epochs=int(section["epochs"]), batch_size=int(section["batch_size"]),
            accumulation_steps=int(section.get("accumulation_steps", 1)),
            learning_rate=float(section["learning_rate"]), optimizer=str(section["optimizer"]),
            weight_decay=float(section["weight_decay"]), momentum=float(section["momentum"]),
            seed=int(section["seed"]), threads=int(section["threads"]),
            validation_fraction=float(section["validation_fraction"]),
            patience=int(early["patience"]) if early else None,
            min_delta=float(early.get("min_delta", 0.0)) if early else 0.0,
            nproc=int(section.get("nproc", 1)),
        )

    def check(self) -> None:
        """Settings the schema cannot judge alone."""
        if self.patience is not None and self.validation_fraction <= 0:
            raise ConfigError("train.early_stopping needs train.validation_fraction > 0 "
                              "(stopping on the test set would leak it into training)")


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


@dataclass(frozen=True)
class FitResult:
    """What the loop returns on rank 0 (other ranks get an empty history)."""

    history: tuple[EpochStats, ...]
    best_epoch: int
    stopped_early: bool


class Group:
    """The process group as the loop sees it. This one is a single process;
    ``ci_ml.model.distributed.GlooGroup`` is the DDP one."""

    rank: int = 0
    world: int = 1

    def all_sum(self, values: tuple[float, ...]) -> tuple[float, ...]:
        return values

    def from_leader(self, value: int) -> int:
        return value

    def average_buffers(self, model: nn.Module) -> None:
        """Make the ranks' batch-norm statistics one (each saw only its own shard)."""


SINGLE = Group()


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
    return (replace(split, x=split.x[tr], y=split.y[tr]),
            replace(split, x=split.x[val], y=split.y[val]))


@torch.no_grad()
def predict(model: nn.Module, x: np.ndarray,
            batch_size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Logits and predicted classes for a numpy batch."""
    model.eval()
    outs = [model(torch.from_numpy(x[i:i + batch_size])) for i in range(0, len(x), batch_size)]
    logits = torch.cat(outs) if outs else torch.empty(0)
    return logits.numpy(), logits.argmax(dim=1).numpy()


def is_regression(split: Split) -> bool:
    return split.task == "regression"


def loss_fn(outputs: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy on class indices; mean squared error on (standardized) float targets."""
    if y.is_floating_point():
        return nn.functional.mse_loss(outputs.reshape(-1), y, reduction=reduction)
    return nn.functional.cross_entropy(outputs, y, reduction=reduction)


def evaluate_model(model: nn.Module, split: Split, classes: tuple[str, ...]) -> dict[str, Any]:
    """The test metrics: classification, or regression in the target's own units."""
    logits, pred = predict(model, split.x)
    if is_regression(split):
        out = logits.reshape(len(logits), -1)[:, 0].astype(np.float64)
        actual = split.target_mean + split.y.astype(np.float64) * split.target_std
        return regression_metrics(actual, split.target_mean + out * split.target_std)
    loss = float(nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(split.y)))
    return classification_metrics(split.y, pred, classes, loss=loss)


def monitor_scores(model: nn.Module, split: Split, classes: tuple[str, ...]) -> tuple[float, float]:
    """(validation loss in training units, accuracy or r2) after an epoch."""
    logits, _ = predict(model, split.x)
    if is_regression(split):
        out = torch.from_numpy(logits.reshape(len(logits), -1)[:, 0].copy())
        y = torch.from_numpy(split.y)
        loss = float(nn.functional.mse_loss(out, y))
        var = float(y.var(unbiased=False)) if len(y) else 0.0
        return loss, (1.0 - loss / var) if var > 0 else 0.0
    metrics = evaluate_model(model, split, classes)
    return float(metrics["loss"]), float(metrics["accuracy"])


def check_fits(model: nn.Module, x: np.ndarray, spec: ModelSpec) -> None:
    """Run two samples through the model: data that does not fit it fails here, in one line."""
    was_training = model.training
    try:
        with torch.no_grad():
            out = model.eval()(torch.from_numpy(np.ascontiguousarray(x[:2])))
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        raise InputError(
            f"data of shape {list(x.shape[1:])} does not fit model {spec.name!r}: "
            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from exc
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[1] != spec.num_classes:
        shape = list(out.shape[1:]) if isinstance(out, torch.Tensor) else type(out).__name__
        wanted = ("[1] (one value: a regression head)" if spec.task == "regression"
                  else f"[{spec.num_classes}] class scores")
        raise InputError(f"model {spec.name!r} outputs shape {shape}, expected {wanted}")


def epoch_batches(n: int, batch_size: int, generator: torch.Generator, rank: int = 0,
                  world: int = 1) -> list[tuple[torch.Tensor, int]]:
    """This rank's share of each batch of one epoch: (sample indices, global batch size).

    Every rank draws the same permutation from the same seeded generator and cuts it into
    the single-process run's batches of ``batch_size``; each rank takes every
    ``world``-th sample of every batch. So N processes take the same optimizer steps on the
    same samples as one process (same global batch, same schedule, no sample repeated), and
    every rank runs the same number of steps, which DDP needs.
    """
    order = torch.randperm(n, generator=generator)
    return [(order[i:i + batch_size][rank::world], len(order[i:i + batch_size]))
            for i in range(0, n, batch_size)]


def _accumulate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor,
                parts: int, scale: float) -> torch.Tensor:
    """Backward through ``idx`` in ``parts`` micro-batches; the gradients add up to those of
    the whole batch's loss (per-sample sums times ``scale``). Returns that loss."""
    losses = []
    for part in torch.tensor_split(idx, parts):
        loss = loss_fn(model(x[part]), y[part], reduction="sum") * scale
        loss.backward()
        losses.append(loss.detach())
    return torch.stack(losses).sum()


def epoch_sums(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
               batch_size: int, generator: torch.Generator, rank: int = 0,
               world: int = 1, accumulation: int = 1) -> tuple[float, int]:
    """One pass over this rank's shard: (sum of per-sample losses, samples seen).

    The loop does nothing per batch besides the math: no finiteness check and no
    ``.item()`` (each is a tensor op or a device sync per batch; the benchmark in
    benchmarks/train.py measured the check alone at several percent on small
    models). The batch losses are kept as tensors and summed once; a NaN or inf
    loss poisons that sum, which the caller checks once per epoch.

    With ``accumulation`` > 1 each batch goes through the model in that many
    micro-batches whose gradients add up (each loss weighted by its share of the
    batch) before one optimizer step: the same update as one batch, in the memory of
    a micro-batch (batch norm normalizes over each micro-batch).
    """
    model.train()
    losses: list[torch.Tensor] = []
    sizes: list[float] = []   # what each loss is the mean over, in samples
    seen = 0
    for idx, global_size in epoch_batches(len(y), batch_size, generator, rank, world):
        opt.zero_grad(set_to_none=True)
        parts = min(max(accumulation, 1), len(idx))
        if world == 1:
            weight: float = len(idx)
            if parts <= 1:
                loss = loss_fn(model(x[idx]), y[idx])
                loss.backward()
            else:
                loss = _accumulate(model, x, y, idx, parts, 1.0 / len(idx))
        else:
            # DDP averages the ranks' gradients: scaled so, the step is the mean over the
            # whole global batch (a rank's share may be one sample short, or empty).
            weight = global_size / world
            if parts <= 1:
                loss = loss_fn(model(x[idx]), y[idx], reduction="sum") * (world / global_size)
                loss.backward()
            else:
                loss = _accumulate(model, x, y, idx, parts, world / global_size)
        opt.step()
        losses.append(loss.detach())
        sizes.append(weight)
        seen += len(idx)
    if not losses:
        return 0.0, 0
    total = torch.stack(losses).double() @ torch.tensor(sizes, dtype=torch.float64)
    return float(total), seen


def train_epoch(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                batch_size: int, generator: torch.Generator) -> float:
    """One single-process epoch; returns the mean training loss. Raises if it diverged."""
    total, seen = epoch_sums(model, opt, x, y, batch_size, generator)
    loss = total / max(seen, 1)
    if not math.isfinite(loss):
        raise diverged(loss, None)
    return loss


def diverged(loss: float, epoch: int | None) -> InputError:
    where = f" in epoch {epoch}" if epoch is not None else ""
    return InputError(
        f"training diverged: the loss became {loss}{where}; "
        "lower train.learning_rate or check the data for extreme values (data.scale)"
    )


def fit(model: nn.Module, train: Split, monitor: Split, classes: tuple[str, ...],
        s: TrainSettings, generator: torch.Generator, progress: ProgressFn | None = None,
        group: Group = SINGLE, early_stopping: bool = True) -> FitResult:
    """The training loop, with early stopping on ``monitor`` (rank 0 decides, all follow).

    ``model`` may be wrapped in DistributedDataParallel; its ``.module`` is evaluated
    and, on rank 0, left holding the best epoch's weights.
    """
    net: nn.Module = getattr(model, "module", model)
    x, y = torch.from_numpy(train.x), torch.from_numpy(train.y)
    opt = make_optimizer(model, s)
    history: list[EpochStats] = []
    best_state: dict[str, torch.Tensor] | None = None
    best_loss, best_epoch, bad_epochs = math.inf, 0, 0
    stopped = False
    for epoch in range(1, s.epochs + 1):
        total, seen = epoch_sums(model, opt, x, y, s.batch_size, generator, group.rank,
                                 group.world, s.accumulation_steps)
        total, seen_f = group.all_sum((total, float(seen)))
        group.average_buffers(net)
        train_loss = total / max(seen_f, 1.0)
        if not math.isfinite(train_loss):
            raise diverged(train_loss, epoch)  # every rank saw the same reduced sum
        verdict = CONTINUE
        if group.rank == 0:
            val_loss, val_score = monitor_scores(net, monitor, classes)
            if not math.isfinite(val_loss):
                verdict = DIVERGED
            else:
                history.append(EpochStats(epoch, train_loss, val_loss, val_score))
                if progress:
                    score = "val_r2" if is_regression(monitor) else "val_acc"
                    progress(epoch, s.epochs, f"loss {train_loss:.4f} val_loss {val_loss:.4f} "
                                              f"{score} {val_score:.4f}")
                if early_stopping and s.patience is not None:
                    if val_loss < best_loss - s.min_delta:
                        best_loss, best_epoch, bad_epochs = val_loss, epoch, 0
                        best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
                    else:
                        bad_epochs += 1
                        if bad_epochs >= s.patience:
                            verdict = STOP
        verdict = group.from_leader(verdict)
        if verdict == DIVERGED:
            raise diverged(math.nan, epoch)
        if verdict == STOP:
            stopped = True
            break
    if best_state is not None:
        net.load_state_dict(best_state)
    else:
        best_epoch = len(history)
    return FitResult(tuple(history), best_epoch, stopped)


def prepare(bundle: DataBundle, s: TrainSettings) -> tuple[Split, Split | None, Split]:
    """(train, validation or None, test) splits, the same in every process."""
    train_split, val_split = validation_split(bundle.split("train"), s.validation_fraction, s.seed)
    return train_split, val_split, bundle.split("test")


def train_model(bundle: DataBundle, spec: ModelSpec, s: TrainSettings,
                progress: ProgressFn | None = None, project_dir: Any = None) -> TrainResult:
    s.check()
    generator = make_deterministic(s.seed, s.threads)
    model = build_model(spec, project_dir)
    train_split, val_split, test_split = prepare(bundle, s)
    check_fits(model, train_split.x, spec)
    # Without a validation split the curves follow the test set; early stopping never does.
    result = fit(model, train_split, val_split or test_split, bundle.classes, s, generator,
                 progress, early_stopping=val_split is not None)
    metrics = evaluate_model(model, test_split, bundle.classes)
    return TrainResult(model, spec, result.history, metrics, result.best_epoch,
                       result.stopped_early)
