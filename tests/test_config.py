"""The config loader: schema validation, defaults, pyproject support, messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from ci_ml.config import load_config
from ci_ml.errors import ConfigError
from tests.conftest import FIXTURES

MINIMAL = """\
data: {train: a.csv, test: b.csv, target: y}
model: {name: mlp}
"""


def test_defaults_are_filled_in(tmp_path: Path) -> None:
    (tmp_path / "ci-ml.yaml").write_text(MINIMAL)
    config = load_config(cwd=tmp_path)
    assert config.section("train")["epochs"] == 10
    assert config.section("scan")["code"]["paths"] == ["src"]
    assert config.section("policy")["staging"]["required_scans"] == ["code", "deps", "model"]
    assert config.section("data")["checks"]["max_drift_psi"] == 0.25
    assert config.root == tmp_path.resolve()


def test_pyproject_table_is_found(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\n\n[tool.ci-ml]\nmodel = {name = "mlp"}\n'
        '[tool.ci-ml.data]\ntrain = "a.csv"\ntest = "b.csv"\ntarget = "y"\n'
        '[tool.ci-ml.train]\nepochs = 3\n'
    )
    config = load_config(cwd=tmp_path)
    assert config.path.name == "pyproject.toml"
    assert config.section("train")["epochs"] == 3


def test_ci_ml_yaml_wins_over_pyproject(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.ci-ml]\nversion = 1\n')
    (tmp_path / "ci-ml.yaml").write_text(MINIMAL)
    assert load_config(cwd=tmp_path).path.name == "ci-ml.yaml"


@pytest.mark.parametrize(("extra", "message"), [
    ("policy: {staging: {findings: {severe: 1}}}", "policy.staging.findings"),
    ("policy: {staging: {metrics: {accuracy: {minimum: 0.9}}}}",
     "policy.staging.metrics.accuracy.minimum: unknown key"),
    ("scan: {code: {paths: []}}", "scan.code.paths: must not be empty"),
    ("train: {learning_rate: 0}", "train.learning_rate: must be > 0, got 0"),
    ("prune: {ratio: 1.5}", "prune.ratio: must be < 1, got 1.5"),
    ("version: 2", "version: must be 1"),
    ("colour: blue", "colour: unknown key (expected one of:"),
])
def test_messages_name_the_key_path(tmp_path: Path, extra: str, message: str) -> None:
    (tmp_path / "ci-ml.yaml").write_text(MINIMAL + extra + "\n")
    with pytest.raises(ConfigError) as info:
        load_config(cwd=tmp_path)
    assert message in str(info.value)
    assert str(tmp_path / "ci-ml.yaml") in str(info.value)


def test_missing_required_section(tmp_path: Path) -> None:
    (tmp_path / "ci-ml.yaml").write_text("model: {name: mlp}\n")
    with pytest.raises(ConfigError, match="missing required key 'data'"):
        load_config(cwd=tmp_path)


def test_digest_changes_only_with_the_section(tmp_path: Path) -> None:
    (tmp_path / "ci-ml.yaml").write_text(MINIMAL)
    a = load_config(cwd=tmp_path)
    (tmp_path / "ci-ml.yaml").write_text(MINIMAL + "train: {epochs: 4}\n")
    b = load_config(cwd=tmp_path)
    assert a.digest("data") == b.digest("data")
    assert a.digest("train") != b.digest("train")


def test_a_train_command_config_validates_again_once_its_defaults_are_filled(
        tmp_path: Path) -> None:
    """Scan commands re-validate the loaded config (defaults filled, `model: {}` among
    them): a project trained by train.command has no model name, and needs none."""
    from ci_ml.scan.command import with_overrides

    config = load_config(FIXTURES / "sklearn-example" / "ci-ml.yaml")
    assert "name" not in config.section("model")
    for scanner in ("code", "deps", "model"):
        with_overrides(config, scanner, {})
    zoo = tmp_path / "ci-ml.yaml"
    zoo.write_text("data: {train: a.csv, test: b.csv, target: y}\nmodel: {params: {}}\n")
    with pytest.raises(ConfigError, match="model: missing required key 'name'"):
        load_config(zoo)
