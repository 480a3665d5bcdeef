"""`ci-ml evaluate --model`: the same metrics for another model, through the real CLI."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest
import torch

from ci_ml.model.persist import load_model
from ci_ml.model.zoo import card_spec
from tests.conftest import EXAMPLE, run_cli

METRIC_KEYS = ("accuracy", "macro_precision", "macro_recall", "macro_f1", "samples", "per_class",
               "confusion_matrix", "loss")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example, trained briefly once for the module, plus an ONNX export of it."""
    root = tmp_path_factory.mktemp("evaluate")
    project = root / "example"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns(".ci-ml-cache", "__pycache__"))
    cfg = project / "ci-ml.yaml"
    cfg.write_text(cfg.read_text().replace("epochs: 15", "epochs: 2")
                   .replace("channels: [32, 64, 128]", "channels: [8, 16, 16]"))
    r = run_cli("train", "--config", cfg, "--out", root / "out")
    assert r.code == 0, r.output
    model, card = load_model(root / "out" / "model")
    bare = root / "onnx" / "model.onnx"
    bare.parent.mkdir()
    with warnings.catch_warnings():  # the TorchScript exporter is deprecated, and fine here
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (torch.zeros(1, *card_spec(card).input_shape),), str(bare),
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                          dynamo=False)
    return root


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def test_evaluating_the_trained_model_reproduces_its_metrics(trained: Path, tmp_path: Path) -> None:
    r = run_cli("evaluate", "--model", trained / "out" / "model",
                "--config", trained / "example" / "ci-ml.yaml", "--out", tmp_path)
    assert r.code == 0, r.output
    evaluation = json.loads((tmp_path / "evaluation.json").read_text())
    metrics = json.loads((trained / "out" / "metrics.json").read_text())
    for key in METRIC_KEYS:
        assert evaluation[key] == metrics[key], key
    run = json.loads((trained / "out" / "train-run.json").read_text())
    assert evaluation["source"]["format"] == "ci-ml"
    assert evaluation["source"]["weights_sha256"] == run["weights_sha256"]
    assert evaluation["data"]["test"]["sha256"] == run["data"]["test"]["sha256"]
    assert f"accuracy {metrics['accuracy']:.4f}" in r.stdout


def test_an_onnx_model_gives_the_same_metrics(trained: Path, tmp_path: Path) -> None:
    out = tmp_path / "e.json"
    r = run_cli("evaluate", "--model", trained / "onnx" / "model.onnx",
                "--config", trained / "example" / "ci-ml.yaml", "--output", out)
    assert r.code == 0, r.output
    evaluation = json.loads(out.read_text())
    metrics = json.loads((trained / "out" / "metrics.json").read_text())
    assert evaluation["source"]["format"] == "onnx"
    assert evaluation["confusion_matrix"] == metrics["confusion_matrix"]
    assert evaluation["loss"] == pytest.approx(metrics["loss"], abs=1e-4)
    assert not (tmp_path / "evaluation.json").exists()  # --output replaces <out>/evaluation.json


@pytest.mark.parametrize("kind", ["state_dict", "full_model"])
def test_a_torch_save_checkpoint_is_refused(trained: Path, tmp_path: Path, kind: str) -> None:
    model, _ = load_model(trained / "out" / "model")
    path = tmp_path / "production.pt"
    torch.save(model.state_dict() if kind == "state_dict" else model, path)
    r = run_cli("evaluate", "--model", path, "--config", trained / "example" / "ci-ml.yaml",
                "--out", tmp_path / "out")
    assert r.code == 2, r.output
    lines = _error_lines(r.stderr)
    assert len(lines) == 1 and "Traceback" not in r.output
    assert lines[0].startswith(f"error: {path}: refusing a pickle-based checkpoint")
    assert "can execute code" in lines[0]
    assert not (tmp_path / "out" / "evaluation.json").exists()


def test_corrupted_weights_exit_2(trained: Path, tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    shutil.copytree(trained / "out" / "model", model_dir)
    weights = model_dir / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    r = run_cli("evaluate", "--model", model_dir, "--config", trained / "example" / "ci-ml.yaml",
                "--out", tmp_path / "out")
    assert r.code == 2, r.output
    assert _error_lines(r.stderr) == [f"error: {weights}: corrupted or replaced: its sha256 "
                                      "differs from the weights_sha256 recorded in model.json"]
    assert not (tmp_path / "out").exists()


def test_a_file_that_is_not_onnx_exits_2(trained: Path, tmp_path: Path) -> None:
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"\x01\x02 this is not a protobuf")
    r = run_cli("evaluate", "--model", bad, "--config", trained / "example" / "ci-ml.yaml",
                "--out", tmp_path / "out")
    assert r.code == 2, r.output
    lines = _error_lines(r.stderr)
    assert len(lines) == 1 and lines[0].startswith(f"error: {bad}: not a valid ONNX model")


def test_test_data_that_does_not_fit_the_model_exits_2(trained: Path, tmp_path: Path) -> None:
    project = tmp_path / "project"
    shutil.copytree(trained / "example", project)
    cfg = project / "ci-ml.yaml"
    # The same CSVs, but only half of the pixels as features.
    cols = ", ".join(f"px{i}" for i in range(32))
    cfg.write_text(cfg.read_text().replace("  scale: 16.0", f"  features: [{cols}]\n  scale: 16.0")
                   .replace("input_shape: [1, 8, 8]", "input_shape: [1, 4, 8]"))
    r = run_cli("evaluate", "--model", trained / "out" / "model", "--config", cfg,
                "--out", tmp_path / "out")
    assert r.code == 2, r.output
    lines = _error_lines(r.stderr)
    assert len(lines) == 1
    assert "does not fit the model's features (64 columns; the data lacks 'px32')" in lines[0]


def test_missing_model_and_missing_option_exit_2(trained: Path, tmp_path: Path) -> None:
    cfg = trained / "example" / "ci-ml.yaml"
    r = run_cli("evaluate", "--model", tmp_path / "nope", "--config", cfg, "--out", tmp_path)
    assert r.code == 2
    assert _error_lines(r.stderr) == [f"error: --model {tmp_path / 'nope'}: not found"]
    r = run_cli("evaluate", "--config", cfg, "--out", tmp_path)
    assert r.code == 2 and "--model" in r.stderr
