"""Training as a library: reproducibility, sharding, early stopping, divergence, shape checks."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from ci_ml.config import load_config
from ci_ml.data.loader import DataBundle, load_data
from ci_ml.errors import ConfigError, InputError
from ci_ml.fsutil import sha256_file
from ci_ml.model.layout import model_spec
from ci_ml.model.outputs import zoo_card
from ci_ml.model.persist import WEIGHTS, save_model
from ci_ml.model.train import (
    TrainSettings,
    check_fits,
    epoch_batches,
    epoch_sums,
    make_deterministic,
    make_optimizer,
    train_epoch,
    train_model,
)
from ci_ml.model.zoo import ModelSpec, build_model


def _setup(project: Path) -> tuple[DataBundle, ModelSpec, TrainSettings]:
    config = load_config(project / "ci-ml.yaml")
    bundle = load_data(config)
    spec = model_spec(config, bundle.input_shape, len(bundle.classes))
    return bundle, spec, TrainSettings.from_config(config.section("train"))


def _weights_sha(result_model: torch.nn.Module, spec: ModelSpec, bundle: DataBundle,
                 where: Path) -> str:
    save_model(result_model, zoo_card(bundle, spec), where)
    return sha256_file(where / WEIGHTS)


def test_same_inputs_give_the_same_weights_sha256(fast_example: Path, tmp_path: Path) -> None:
    bundle, spec, settings = _setup(fast_example)
    first = train_model(bundle, spec, settings)
    second = train_model(bundle, spec, settings)
    other_seed = train_model(bundle, spec, replace(settings, seed=1))
    sha_1 = _weights_sha(first.model, spec, bundle, tmp_path / "a")
    sha_2 = _weights_sha(second.model, spec, bundle, tmp_path / "b")
    sha_3 = _weights_sha(other_seed.model, spec, bundle, tmp_path / "c")
    assert sha_1 == sha_2
    assert sha_3 != sha_1  # the hash does depend on what training did
    assert first.metrics == second.metrics
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.get_num_threads() == settings.threads


@pytest.mark.parametrize(("n", "batch", "world"), [(10, 4, 1), (10, 4, 2), (11, 4, 2),
                                                   (7, 3, 3), (2, 8, 4), (9, 4, 4)])
def test_epoch_batches_split_the_single_process_batches(n: int, batch: int, world: int) -> None:
    """N ranks take the one-process run's steps: same batches, shared out, none repeated."""
    single = epoch_batches(n, batch, torch.Generator().manual_seed(5))
    shards = [epoch_batches(n, batch, torch.Generator().manual_seed(5), rank, world)
              for rank in range(world)]
    assert len({len(s) for s in shards}) == 1 == len({len(single), len(shards[0])})
    for step, (whole, size) in enumerate(single):
        assert size == len(whole)
        parts = [shard[step][0] for shard in shards]
        assert all(shard[step][1] == size for shard in shards)
        assert sorted(torch.cat(parts).tolist()) == sorted(whole.tolist())
    assert sorted(torch.cat([i for i, _ in single]).tolist()) == list(range(n))


def test_train_epoch_returns_the_mean_sample_loss(fast_example: Path) -> None:
    bundle, spec, settings = _setup(fast_example)
    make_deterministic(0, 1)
    model = build_model(spec)
    split = bundle.split("train")
    x, y = torch.from_numpy(split.x), torch.from_numpy(split.y)
    total, seen = epoch_sums(model, make_optimizer(model, settings), x, y, 64,
                             torch.Generator().manual_seed(0))
    assert seen == len(y)
    assert 0.5 < total / seen < 5.0  # ~ln(10) for 10 classes in the first epoch


def test_nan_loss_stops_with_a_clear_message(fast_example: Path) -> None:
    bundle, spec, settings = _setup(fast_example)
    with pytest.raises(InputError, match=r"training diverged: the loss became nan in epoch 1; "
                                         r"lower train.learning_rate"):
        train_model(bundle, spec, replace(settings, learning_rate=1e30))


def test_train_epoch_raises_on_a_non_finite_loss() -> None:
    make_deterministic(0, 1)
    model = build_model(ModelSpec("mlp", (4,), 2))
    x = torch.full((8, 4), float("inf"))
    y = torch.zeros(8, dtype=torch.int64)
    opt = make_optimizer(model, TrainSettings())
    with pytest.raises(InputError, match="training diverged"):
        train_epoch(model, opt, x, y, 4, torch.Generator().manual_seed(0))


def test_early_stopping_keeps_the_best_epoch(fast_example: Path) -> None:
    bundle, spec, settings = _setup(fast_example)
    # A learning rate this high makes validation loss bounce, so patience 1 triggers.
    s = replace(settings, epochs=12, patience=1, learning_rate=0.05)
    result = train_model(bundle, spec, s)
    assert result.stopped_early
    assert len(result.history) < 12
    losses = [e.val_loss for e in result.history]
    assert result.best_epoch == 1 + int(np.argmin(losses))
    assert result.best_epoch < len(result.history)


def test_early_stopping_without_validation_is_refused(fast_example: Path) -> None:
    bundle, spec, settings = _setup(fast_example)
    with pytest.raises(ConfigError, match="validation_fraction > 0"):
        train_model(bundle, spec, replace(settings, patience=2, validation_fraction=0.0))


def test_without_validation_the_curves_follow_the_test_set(fast_example: Path) -> None:
    bundle, spec, settings = _setup(fast_example)
    result = train_model(bundle, spec, replace(settings, validation_fraction=0.0))
    assert len(result.history) == settings.epochs
    assert result.history[-1].val_accuracy == pytest.approx(result.metrics["accuracy"], abs=1e-6)


def test_check_fits_rejects_data_the_model_cannot_take() -> None:
    spec = ModelSpec("mlp", (4,), 3)
    model = build_model(spec)
    check_fits(model, np.zeros((5, 4), dtype=np.float32), spec)
    with pytest.raises(InputError, match=r"data of shape \[6\] does not fit model 'mlp'"):
        check_fits(model, np.zeros((5, 6), dtype=np.float32), spec)
    wrong = ModelSpec("mlp", (4,), 5)
    with pytest.raises(InputError, match=r"outputs shape \[3\], expected \[5\]"):
        check_fits(model, np.zeros((5, 4), dtype=np.float32), wrong)


def test_settings_read_nproc_and_early_stopping() -> None:
    section = {"epochs": 3, "batch_size": 8, "learning_rate": 0.1, "optimizer": "sgd",
               "weight_decay": 0.0, "momentum": 0.5, "seed": 4, "threads": 1,
               "validation_fraction": 0.2, "nproc": 3,
               "early_stopping": {"patience": 2, "min_delta": 0.01}}
    s = TrainSettings.from_config(section)
    assert (s.nproc, s.patience, s.min_delta, s.optimizer) == (3, 2, 0.01, "sgd")
