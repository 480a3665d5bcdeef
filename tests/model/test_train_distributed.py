"""`ci-ml train --nproc N`: PyTorch DDP over gloo through torchrun, against one process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import make_training_diverge, run_cli


def _edit(cfg: Path, old: str, new: str) -> None:
    text = cfg.read_text()
    assert old in text, old
    cfg.write_text(text.replace(old, new))


@pytest.mark.slow
def test_two_processes_reach_the_single_process_accuracy(example_project: Path,
                                                         tmp_path: Path) -> None:
    cfg = example_project / "ci-ml.yaml"
    # The full example (15 epochs, seed 0): N processes take the steps one process takes.
    out = tmp_path / "out"
    single = run_cli("train", "--config", cfg, "--out", out)
    assert single.code == 0, single.output
    acc_single = json.loads((out / "metrics.json").read_text())["accuracy"]

    ddp = run_cli("train", "--nproc", "2", "--config", cfg, "--out", out)
    assert ddp.code == 0, ddp.output
    # nproc is part of the cache key: the single-process model is not handed back.
    assert "train passed" in ddp.stderr and "on 2 processes" in ddp.stderr
    assert "  epoch 15/15 loss" in ddp.stderr  # rank 0's progress reaches the log
    acc_ddp = json.loads((out / "metrics.json").read_text())["accuracy"]
    assert abs(acc_ddp - acc_single) <= 0.01, (acc_single, acc_ddp)
    assert acc_ddp > 0.9
    run = json.loads((out / "train-run.json").read_text())
    assert run["environment"]["world_size"] == 2 and run["settings"]["nproc"] == 2
    assert (out / "plots" / "training-curve.png").is_file()
    assert (out / "model" / "model.safetensors").is_file()

    again = run_cli("train", "--nproc", "2", "--config", cfg, "--out", out)
    assert again.code == 0 and "train cached" in again.stderr, again.output


@pytest.mark.slow
def test_a_diverging_rank_stops_the_run_with_exit_2(fast_example: Path, tmp_path: Path) -> None:
    cfg = fast_example / "ci-ml.yaml"
    make_training_diverge(cfg)
    _edit(cfg, "threads: 1", "threads: 1\n  nproc: 2")  # from the config this time
    out = tmp_path / "out"
    r = run_cli("train", "--config", cfg, "--out", out)
    assert r.code == 2, r.output
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: train: training diverged: the loss became nan in epoch 1; lower "
                      "train.learning_rate or check the data for extreme values (data.scale)"]
    assert "Traceback" not in r.output
    assert not (out / "model").exists()
