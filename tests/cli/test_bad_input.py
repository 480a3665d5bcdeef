"""Every bad input through the real CLI: exit 2, one clear line, nothing half-written."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import CliResult, run_cli

Mutator = Callable[[Path], list[str]]


def _set(cfg: Path, old: str, new: str) -> None:
    text = cfg.read_text()
    assert old in text, old
    cfg.write_text(text.replace(old, new))


def no_config(p: Path) -> list[str]:
    (p / "ci-ml.yaml").unlink()
    return []


def yaml_syntax(p: Path) -> list[str]:
    _set(p / "ci-ml.yaml", "  epochs: 15", "  epochs: [15")
    return []


def unknown_key(p: Path) -> list[str]:
    _set(p / "ci-ml.yaml", "  epochs: 15", "  epoch: 15")
    return []


def wrong_type(p: Path) -> list[str]:
    _set(p / "ci-ml.yaml", "  batch_size: 64", "  batch_size: many")
    return []


def missing_data(p: Path) -> list[str]:
    (p / "data" / "train.csv").unlink()
    return []


def empty_csv(p: Path) -> list[str]:
    (p / "data" / "test.csv").write_text("")
    return []


def missing_target(p: Path) -> list[str]:
    _set(p / "ci-ml.yaml", "  target: label", "  target: digit")
    return []


def negative_epochs(p: Path) -> list[str]:
    _set(p / "ci-ml.yaml", "  epochs: 15", "  epochs: -3")
    return []


def unwritable_out(p: Path) -> list[str]:
    blocker = p / "a-file"
    blocker.write_text("not a directory")
    return ["--out", str(blocker / "out")]


def config_is_directory(p: Path) -> list[str]:
    (p / "ci-ml.yaml").unlink()
    (p / "ci-ml.yaml").mkdir()
    return []


def binary_config(p: Path) -> list[str]:
    (p / "ci-ml.yaml").write_bytes(bytes(range(256)) * 4)
    return []


def empty_config(p: Path) -> list[str]:
    (p / "ci-ml.yaml").write_text("# nothing here\n")
    return []


def list_config(p: Path) -> list[str]:
    (p / "ci-ml.yaml").write_text("- data\n- model\n")
    return []


def shape_mismatch(p: Path) -> list[str]:
    _set(p / "ci-ml.yaml", "input_shape: [1, 8, 8]", "input_shape: [1, 8, 9]")
    return []


def bad_enum(p: Path) -> list[str]:
    _set(p / "ci-ml.yaml", "optimizer: adam", "optimizer: adagrad")
    return []


def unknown_model(p: Path) -> list[str]:
    _set(p / "ci-ml.yaml", "  name: cnn ", "  name: resnet ")
    return []


def cnn_on_flat_data(p: Path) -> list[str]:
    _set(p / "ci-ml.yaml", "input_shape: [1, 8, 8]", "input_shape: [64]")
    return []


def unknown_step(p: Path) -> list[str]:
    return ["--only", "deploy-to-mars"]


CASES: list[tuple[Mutator, str]] = [
    (no_config, "no config"),
    (yaml_syntax, "YAML syntax error"),
    (unknown_key, "train.epoch: unknown key (did you mean 'epochs'?)"),
    (wrong_type, "train.batch_size: expected integer"),
    (missing_data, "data file not found"),
    (empty_csv, "is empty"),
    (missing_target, "no target column 'digit'"),
    (negative_epochs, "train.epochs: must be >= 1, got -3"),
    (unwritable_out, "not writable"),
    (config_is_directory, "is a directory"),
    (binary_config, "not a text file"),
    (empty_config, "config is empty"),
    (list_config, "top level must be a mapping"),
    (shape_mismatch, "model.input_shape [1, 8, 9] holds 72 values, but the data has 64"),
    (bad_enum, "train.optimizer: expected one of adam, adamw, sgd, got 'adagrad'"),
    (unknown_model, "model.name: unknown zoo model 'resnet'"),
    (cnn_on_flat_data, "model.input_shape: model 'cnn' needs 3 dimensions"),
    (unknown_step, "unknown step 'deploy-to-mars'"),
]


def _one_error_line(result: CliResult) -> str:
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    assert "Traceback" not in result.output
    return lines[0]


@pytest.mark.parametrize(("mutate", "expected"), CASES, ids=[c[0].__name__ for c in CASES])
def test_bad_input_exits_2_with_one_clear_line(example_project: Path, mutate: Mutator,
                                               expected: str) -> None:
    extra = mutate(example_project)
    result = run_cli("run", "--out", "out", *extra, cwd=example_project)
    assert result.code == 2, result.output
    line = _one_error_line(result)
    assert expected in line
    # Nothing half-written: no out dir, no cache entries.
    assert not (example_project / "out").exists()
    assert not (example_project / ".ci-ml-cache").exists()


def test_a_word_in_a_number_column_is_an_invalid_value_the_gate_weighs(
        example_project: Path) -> None:
    """Not a stop: the data check fails naming the column, training imputes the value, and the
    gate (data_check: required) blocks."""
    lines = (example_project / "data" / "train.csv").read_text().splitlines()
    cells = lines[5].split(",")
    cells[3] = "seven"
    lines[5] = ",".join(cells)
    (example_project / "data" / "train.csv").write_text("\n".join(lines) + "\n")
    result = run_cli("data", "check", "--out", "out", cwd=example_project)
    assert result.code == 1, result.output
    report = (example_project / "out" / "data-report.json").read_text()
    assert '"train:px3": 0.000696' in report and "'seven'" in report


def test_bad_config_error_names_the_file(example_project: Path) -> None:
    unknown_key(example_project)
    line = _one_error_line(run_cli("run", cwd=example_project))
    assert "ci-ml.yaml" in line


def test_verbose_shows_the_traceback(example_project: Path) -> None:
    negative_epochs(example_project)
    result = run_cli("--verbose", "run", cwd=example_project)
    assert result.code == 2
    assert "Traceback" in result.stderr
    assert result.stderr.strip().splitlines()[-1].endswith("train.epochs: must be >= 1, got -3")


def test_unknown_option_is_usage_error(example_project: Path) -> None:
    result = run_cli("run", "--stage", "moon", cwd=example_project)
    assert result.code == 2
    assert "moon" in result.stderr
