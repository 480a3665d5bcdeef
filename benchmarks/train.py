"""Samples/s of ci-ml's training loop against a plain hand-written PyTorch loop.

Same model (the example's CNN, and an MLP), same data (the digits example), same
batch size, optimizer, thread count and deterministic settings; the two loops run
in interleaved rounds (order alternating) in this one process, so machine noise
hits both alike. Prints the median samples/s of each (wall clock, and CPU time
as a check) and the median of the per-round ratios (target: ci-ml / plain >= 0.95
by wall clock).

    PYTHONPATH=. python benchmarks/train.py [--rounds 31]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

from ci_ml.config import load_config
from ci_ml.data.loader import load_data
from ci_ml.model.layout import model_spec
from ci_ml.model.train import (
    TrainSettings,
    epoch_sums,
    make_deterministic,
    make_optimizer,
    prepare,
)
from ci_ml.model.zoo import ModelSpec, build_model

EXAMPLE = Path(__file__).resolve().parents[1] / "fixtures" / "example" / "ci-ml.yaml"
TARGET = 0.95


def plain_epoch(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                batch_size: int, generator: torch.Generator) -> None:
    """What one writes by hand: shuffle, slice, forward, backward, step. Nothing else."""
    model.train()
    perm = torch.randperm(len(y), generator=generator)
    for i in range(0, len(y), batch_size):
        idx = perm[i:i + batch_size]
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        loss.backward()
        opt.step()


def ci_ml_epoch(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                batch_size: int, generator: torch.Generator) -> None:
    epoch_sums(model, opt, x, y, batch_size, generator)


def measure(spec: ModelSpec, settings: TrainSettings, x: torch.Tensor, y: torch.Tensor,
            rounds: int, epochs: int) -> dict[str, tuple[float, float, float]]:
    """Per clock (wall, cpu): median samples/s of each loop and the median paired ratio.

    Each round times both loops back to back, order alternating, and yields one
    ci-ml/plain ratio; on a shared machine a burst of other work spoils a pair,
    not the comparison, and the median discards spoiled pairs. CPU time of this
    thread (all of the work, at one intra-op thread) is a second opinion that
    preemption does not inflate.
    """
    make_deterministic(settings.seed, settings.threads)
    initial = build_model(spec)
    loops = {"ci-ml": ci_ml_epoch, "plain": plain_epoch}
    state = {}
    for name in loops:
        model = copy.deepcopy(initial)
        state[name] = (model, make_optimizer(model, settings),
                       torch.Generator().manual_seed(settings.seed))
    clocks = {"wall": time.perf_counter, "cpu": time.thread_time}
    rates: dict[str, dict[str, list[float]]] = {c: {n: [] for n in loops} for c in clocks}
    ratios: dict[str, list[float]] = {c: [] for c in clocks}
    for r in range(rounds + 1):
        order = list(loops) if r % 2 == 0 else list(reversed(loops))
        took: dict[str, dict[str, float]] = {c: {} for c in clocks}
        for name in order:
            model, opt, gen = state[name]
            start = {c: f() for c, f in clocks.items()}
            for _ in range(epochs):
                loops[name](model, opt, x, y, settings.batch_size, gen)
            for c, f in clocks.items():
                took[c][name] = epochs * len(y) / max(f() - start[c], 1e-9)
        if r == 0:  # round 0 warms up allocator and kernels for both
            continue
        for c in clocks:
            for name in loops:
                rates[c][name].append(took[c][name])
            ratios[c].append(took[c]["ci-ml"] / took[c]["plain"])
    return {c: (statistics.median(rates[c]["ci-ml"]), statistics.median(rates[c]["plain"]),
                statistics.median(ratios[c])) for c in clocks}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=31)
    args = parser.parse_args()
    config = load_config(EXAMPLE)
    bundle = load_data(config)
    settings = TrainSettings.from_config(config.section("train"))
    train_split, _, _ = prepare(bundle, settings)
    x, y = torch.from_numpy(train_split.x), torch.from_numpy(train_split.y)
    cnn = model_spec(config, bundle.input_shape, len(bundle.classes))
    mlp = ModelSpec("mlp", bundle.input_shape, len(bundle.classes), {"hidden": [128, 64]})
    print(f"data: {len(y)} training samples of shape {list(x.shape[1:])}, batch "
          f"{settings.batch_size}, {settings.optimizer}, {settings.threads} thread(s), "
          f"torch {torch.__version__}")
    print(f"{'model':<16}{'clock':<7}{'ci-ml samples/s':>17}{'plain samples/s':>17}{'ratio':>8}")
    worst = float("inf")
    for label, spec, epochs in (("cnn 32-64-128", cnn, 1), ("mlp 128-64", mlp, 5)):
        for clock, (ours, plain, ratio) in measure(spec, settings, x, y, args.rounds,
                                                   epochs).items():
            if clock == "wall":
                worst = min(worst, ratio)
            print(f"{label:<16}{clock:<7}{ours:>17.0f}{plain:>17.0f}{ratio:>8.3f}")
    verdict = "ok" if worst >= TARGET else "BELOW TARGET"
    print(f"lowest wall-clock ratio {worst:.3f} (target >= {TARGET}): {verdict}")
    return 0 if worst >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
