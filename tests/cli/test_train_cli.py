"""`ci-ml train` through the real CLI: outputs, manifest, plots, caching and bad inputs."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import make_training_diverge, run_cli

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _edit(cfg: Path, old: str, new: str) -> None:
    text = cfg.read_text()
    assert old in text, old
    cfg.write_text(text.replace(old, new))


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def test_train_writes_model_metrics_manifest_and_plots(fast_example: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = run_cli("train", "--config", fast_example / "ci-ml.yaml", "--out", out)
    assert r.code == 0, r.output
    # In a CI log the per-epoch progress is plain lines, one per epoch here.
    assert re.search(r"^  epoch 1/2 loss \S+ val_loss \S+ val_acc \S+$", r.stderr, re.M)
    assert "\r" not in r.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["samples"] == 360
    assert len(metrics["confusion_matrix"]) == 10
    assert sum(map(sum, metrics["confusion_matrix"])) == 360
    assert set(metrics["per_class"]["3"]) == {"precision", "recall", "f1", "support"}
    assert metrics["loss"] > 0
    run = json.loads((out / "train-run.json").read_text())
    assert run["weights_sha256"] == _sha(out / "model" / "model.safetensors")
    model_json = json.loads((out / "model" / "model.json").read_text())
    assert model_json["weights_sha256"] == run["weights_sha256"]
    assert run["data"]["train"]["sha256"] == _sha(fast_example / "data" / "train.csv")
    assert run["data"]["test"]["sha256"] == _sha(fast_example / "data" / "test.csv")
    assert run["data"]["train"]["rows"] == 1437
    assert len(run["config"]["sha256"]) == 64
    assert run["code"]["git"]["repository"] is False  # tmp_path is no git repo: said, not fatal
    assert run["seed"] == 0 and run["settings"]["epochs"] == 2
    env = run["environment"]
    assert env["threads"] == 1 and env["world_size"] == 1
    assert env["deterministic_algorithms"] is True
    assert env["torch"].startswith("2.") and env["cpu"]
    assert set(env["packages"]) >= {"torch", "numpy", "safetensors"}
    assert run["result"]["accuracy"] == metrics["accuracy"]
    history = json.loads((out / "train-history.json").read_text())
    assert [e["epoch"] for e in history["epochs"]] == [1, 2]
    for png in ("training-curve.png", "confusion-matrix.png"):
        data = (out / "plots" / png).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 5000
    manifest = json.loads((out / "manifest.json").read_text())
    train_rec = next(s for s in manifest["steps"] if s["name"] == "train")
    assert set(train_rec["outputs"]) >= {"model", "train-run.json", "plots/training-curve.png"}


def test_two_runs_give_identical_weights(fast_example: Path, tmp_path: Path) -> None:
    shas = []
    for name in ("a", "b"):
        r = run_cli("train", "--force", "--config", fast_example / "ci-ml.yaml",
                    "--out", tmp_path / name)
        assert r.code == 0, r.output
        assert "train passed" in r.stderr  # trained, not restored from the cache
        shas.append(json.loads((tmp_path / name / "train-run.json").read_text())["weights_sha256"])
    assert shas[0] == shas[1]
    assert _sha(tmp_path / "a" / "model" / "model.safetensors") == shas[0]


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd,
                          check=True, capture_output=True, text=True).stdout.strip()


def test_manifest_records_git_commit_and_dirty_flag(fast_example: Path) -> None:
    _git(fast_example, "init", "-q")
    _git(fast_example, "add", "-A")
    _git(fast_example, "commit", "-qm", "init")
    head = _git(fast_example, "rev-parse", "HEAD")
    # The output and the cache inside the project do not make it dirty.
    r = run_cli("train", "--config", fast_example / "ci-ml.yaml", "--out", fast_example / "out")
    assert r.code == 0, r.output
    git = json.loads((fast_example / "out" / "train-run.json").read_text())["code"]["git"]
    assert git == {"repository": True, "commit": head, "dirty": False, "changed_files": [],
                   "changed_count": 0}
    (fast_example / "src" / "digits_app" / "features.py").write_text("# edited\n", "utf-8")
    r = run_cli("train", "--force", "--config", fast_example / "ci-ml.yaml",
                "--out", fast_example / "out")
    assert r.code == 0, r.output
    git = json.loads((fast_example / "out" / "train-run.json").read_text())["code"]["git"]
    assert git["commit"] == head and git["dirty"] is True
    assert git["changed_files"] == ["src/digits_app/features.py"]


FACTORY = '''from torch import nn


def tiny(input_shape, num_classes, hidden=16):
    width = 1
    for d in input_shape:
        width *= d
    return nn.Sequential(nn.Flatten(), nn.Linear(width, hidden), nn.ReLU(),
                         nn.Linear(hidden, num_classes))
'''


def test_source_changes_retrain_only_a_model_built_from_that_source(fast_example: Path,
                                                                     tmp_path: Path) -> None:
    cfg = fast_example / "ci-ml.yaml"
    src = fast_example / "src" / "digits_app"
    out = tmp_path / "out"
    assert run_cli("train", "--config", cfg, "--out", out).code == 0
    (src / "client.py").write_text((src / "client.py").read_text() + "\n# touched\n")
    r = run_cli("train", "--config", cfg, "--out", out)
    assert r.code == 0 and "train cached" in r.stderr, r.output  # a zoo model ignores src/

    (src / "nets.py").write_text(FACTORY)
    _edit(cfg, "name: cnn ", "name: digits_app.nets:tiny ")
    _edit(cfg, "channels: [8, 16, 16]", "hidden: 16")
    r = run_cli("train", "--config", cfg, "--out", out)
    assert r.code == 0 and "train passed" in r.stderr, r.output
    run = json.loads((out / "train-run.json").read_text())
    assert list(run["code"]["user_code"]) == ["src/digits_app"]
    r = run_cli("train", "--config", cfg, "--out", out)
    assert "train cached" in r.stderr, r.output
    (src / "features.py").write_text((src / "features.py").read_text() + "\n# touched\n")
    r = run_cli("train", "--config", cfg, "--out", out)
    assert r.code == 0 and "train passed" in r.stderr, r.output  # its package changed
    assert json.loads((out / "train-run.json").read_text())["code"]["user_code"] != \
        run["code"]["user_code"]


def test_nan_loss_exits_2_with_one_line_and_writes_no_model(fast_example: Path,
                                                            tmp_path: Path) -> None:
    make_training_diverge(fast_example / "ci-ml.yaml")
    out = tmp_path / "out"
    r = run_cli("train", "--config", fast_example / "ci-ml.yaml", "--out", out)
    assert r.code == 2, r.output
    assert _error_lines(r.stderr) == [
        "error: train: training diverged: the loss became nan in epoch 1; lower "
        "train.learning_rate or check the data for extreme values (data.scale)"]
    assert "Traceback" not in r.output
    assert not (out / "model").exists() and not (out / "metrics.json").exists()


@pytest.mark.parametrize(("old", "new", "message"), [
    ("input_shape: [1, 8, 8]", "input_shape: [64]",
     "error: model.input_shape: model 'cnn' needs 3 dimensions [channels, height, width], got [64]"),
    ("input_shape: [1, 8, 8]", "input_shape: [1, 4, 8]",
     "error: model.input_shape [1, 4, 8] holds 32 values, but the data has 64 features"),
])
def test_data_that_does_not_fit_the_model_exits_2(fast_example: Path, tmp_path: Path, old: str,
                                                  new: str, message: str) -> None:
    _edit(fast_example / "ci-ml.yaml", old, new)
    out = tmp_path / "out"
    r = run_cli("train", "--config", fast_example / "ci-ml.yaml", "--out", out)
    assert r.code == 2, r.output
    assert _error_lines(r.stderr) == [message]
    assert not out.exists()  # refused before any step ran


def test_factory_model_that_does_not_fit_the_data_exits_2(fast_example: Path,
                                                          tmp_path: Path) -> None:
    (fast_example / "src" / "digits_app" / "nets.py").write_text(
        "from torch import nn\n\n\ndef conv(input_shape, num_classes):\n"
        "    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.LazyLinear(num_classes))\n")
    cfg = fast_example / "ci-ml.yaml"
    _edit(cfg, "name: cnn ", "name: digits_app.nets:conv ")
    _edit(cfg, "input_shape: [1, 8, 8]", "input_shape: [64]")
    _edit(cfg, "channels: [8, 16, 16]", "{}")
    out = tmp_path / "out"
    r = run_cli("train", "--config", cfg, "--out", out)
    assert r.code == 2, r.output
    lines = _error_lines(r.stderr)
    assert len(lines) == 1
    assert lines[0].startswith(
        "error: data of shape [64] does not fit model 'digits_app.nets:conv'")
    assert not out.exists()


@pytest.mark.parametrize("value", ["0", "-1", "two"])
def test_bad_nproc_exits_2(fast_example: Path, tmp_path: Path, value: str) -> None:
    r = run_cli("train", "--nproc", value, "--config", fast_example / "ci-ml.yaml",
                "--out", tmp_path / "out")
    assert r.code == 2, r.output
    assert "--nproc" in r.stderr


def test_nproc_in_config_is_schema_checked(fast_example: Path, tmp_path: Path) -> None:
    _edit(fast_example / "ci-ml.yaml", "threads: 1", "threads: 1\n  nproc: 0")
    r = run_cli("train", "--config", fast_example / "ci-ml.yaml", "--out", tmp_path / "out")
    assert r.code == 2
    assert _error_lines(r.stderr) == [f"error: {fast_example / 'ci-ml.yaml'}: train.nproc: "
                                      "must be >= 1, got 0"]


def test_early_stopping_without_a_validation_split_exits_2(fast_example: Path,
                                                           tmp_path: Path) -> None:
    _edit(fast_example / "ci-ml.yaml", "validation_fraction: 0.1",
          "validation_fraction: 0.0\n  early_stopping: {patience: 2}")
    out = tmp_path / "out"
    r = run_cli("train", "--config", fast_example / "ci-ml.yaml", "--out", out)
    assert r.code == 2, r.output
    assert _error_lines(r.stderr) == [
        "error: train.early_stopping needs train.validation_fraction > 0 (stopping on the test "
        "set would leak it into training)"]
    assert not out.exists()
