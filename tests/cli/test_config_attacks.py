"""Configs written to break ci-ml, through the real CLI: each is exit 2 with one ``error:``
line naming the input and the key, and nothing is written (no out dir, no cache)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import CliResult, run_cli

Mutator = Callable[[Path], list[str]]


def _set(cfg: Path, old: str, new: str) -> None:
    text = cfg.read_text()
    assert old in text, old
    cfg.write_text(text.replace(old, new, 1))


def _append(cfg: Path, text: str) -> None:
    cfg.write_text(cfg.read_text() + text)


def duplicate_policy(p: Path) -> list[str]:
    # A second 'policy:' would silently replace the strict one above it.
    _append(p / "ci-ml.yaml", "policy:\n  staging:\n    findings: {}\n    required_scans: []\n")
    return []


def duplicate_nested_key(p: Path) -> list[str]:
    _set(p / "ci-ml.yaml", "  epochs: 15\n", "  epochs: 15\n  epochs: 1\n")
    return []


def duplicate_waivers_key(p: Path) -> list[str]:
    (p / "waivers.yaml").write_text(
        "waivers:\n  - {id: B602, path: src/a.py, owner: a, reason: r, expires: 2099-01-01}\n"
        "waivers: []\n")
    _set(p / "ci-ml.yaml", "scan:\n", "scan:\n  waivers: waivers.yaml\n")
    return []


def alias_bomb(p: Path) -> list[str]:
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 10)]
    _set(p / "ci-ml.yaml", "model:\n", "model:\n  params:\n    bomb:\n" + "".join(
        f"      {line}\n" for line in lines) + "")
    return []


def recursive_alias(p: Path) -> list[str]:
    _set(p / "ci-ml.yaml", "  params:\n", "  params:\n    loop: &loop [*loop]\n")
    return []


def deep_nesting(p: Path) -> list[str]:
    _set(p / "ci-ml.yaml", "  params:\n", "  params:\n    deep: " + "[" * 5000 + "]" * 5000
         + "\n")
    return []


def nan_scale(p: Path) -> list[str]:
    _set(p / "ci-ml.yaml", "  scale: 16.0 ", "  scale: .nan ")
    return []


def inf_learning_rate(p: Path) -> list[str]:
    _set(p / "ci-ml.yaml", "  learning_rate: 0.002", "  learning_rate: .inf")
    return []


def huge_learning_rate(p: Path) -> list[str]:
    _set(p / "ci-ml.yaml", "  learning_rate: 0.002", "  learning_rate: 1.0e+300")
    return []


def huge_epochs(p: Path) -> list[str]:
    _set(p / "ci-ml.yaml", "  epochs: 15", "  epochs: 99999999999999999999")
    return []


def nan_in_params(p: Path) -> list[str]:
    _set(p / "ci-ml.yaml", "    channels: [32, 64, 128]", "    channels: [32, .nan, 128]")
    return []


def negative_channels(p: Path) -> list[str]:
    _set(p / "ci-ml.yaml", "    channels: [32, 64, 128]", "    channels: [32, -64, 128]")
    return []


def string_channels(p: Path) -> list[str]:
    _set(p / "ci-ml.yaml", "    channels: [32, 64, 128]", "    channels: wide")
    return []


def unknown_param(p: Path) -> list[str]:
    _set(p / "ci-ml.yaml", "    channels: [32, 64, 128]", "    chanels: [32, 64, 128]")
    return []


def huge_input_shape(p: Path) -> list[str]:
    _set(p / "ci-ml.yaml", "input_shape: [1, 8, 8]", "input_shape: [1, 8, 99999999999]")
    return []


def os_system_factory(p: Path) -> list[str]:
    _set(p / "ci-ml.yaml", "  name: cnn ", "  name: 'os:system' ")
    return []


def dev_zero_config(p: Path) -> list[str]:
    return ["--config", "/dev/zero"]


def fifo_config(p: Path) -> list[str]:
    os.mkfifo(p / "pipe.yaml")
    return ["--config", str(p / "pipe.yaml")]


def huge_config(p: Path) -> list[str]:
    _append(p / "ci-ml.yaml", "# " + "x" * (5 * 1024 * 1024) + "\n")
    return []


CASES: list[tuple[Mutator, str]] = [
    (duplicate_policy, "duplicate key 'policy' (first on line"),
    (duplicate_nested_key, "duplicate key 'epochs' (first on line"),
    (duplicate_waivers_key, "waivers.yaml: line 3: duplicate key 'waivers' (first on line 1"),
    (alias_bomb, "expand to more than"),
    (recursive_alias, "recursive alias"),
    (deep_nesting, "nested deeper than 64 levels"),
    (nan_scale, "data.scale: nan is not a finite number"),
    (inf_learning_rate, "train.learning_rate: inf is not a finite number"),
    (huge_learning_rate, "train.learning_rate: must be <= 10"),
    (huge_epochs, "train.epochs: must be <= 100000"),
    (nan_in_params, "model.params.channels[1]: nan is not a finite number"),
    (negative_channels, "model.params.channels[1]: must be >= 1, got -64"),
    (string_channels, "model.params.channels: expected array"),
    (unknown_param, "model.params.chanels: unknown key (did you mean 'channels'?)"),
    (huge_input_shape, "model.input_shape[2]: must be <= 1048576"),
    (os_system_factory, "model.name 'os:system': 'os' is a standard-library module"),
    (dev_zero_config, "/dev/zero: is a character device, expected a config file"),
    (fifo_config, "pipe.yaml: is a FIFO, expected a config file"),
    (huge_config, "larger than a config file may be"),
]


def _one_error_line(result: CliResult) -> str:
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    assert "Traceback" not in result.output and "internal error" not in result.output
    return lines[0]


@pytest.mark.parametrize(("mutate", "expected"), CASES, ids=[c[0].__name__ for c in CASES])
def test_hostile_config_exits_2_naming_input_and_key(example_project: Path, mutate: Mutator,
                                                     expected: str) -> None:
    extra = mutate(example_project)
    result = run_cli("run", "--out", "out", *extra, cwd=example_project, timeout=120)
    assert result.code == 2, result.output
    assert expected in _one_error_line(result)
    assert not (example_project / "out").exists()
    assert not (example_project / ".ci-ml-cache").exists()
