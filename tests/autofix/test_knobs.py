"""Settings <-> config: what a step runs with, and a retry's settings as a valid config."""

from __future__ import annotations

from dataclasses import replace

import pytest

from ci_ml.autofix.classify import load_rules
from ci_ml.autofix.interface import AutofixError, FailureClass, Settings
from ci_ml.autofix.knobs import apply, limits_of, settings_of, snippet
from ci_ml.autofix.optimize import MIN_MICRO_BATCH, Bounds, candidates
from ci_ml.config import Config, load_config
from ci_ml.errors import ConfigError
from ci_ml.limits import MIB
from tests.conftest import EXAMPLE


@pytest.fixture(scope="module")
def config() -> Config:
    return load_config(EXAMPLE / "ci-ml.yaml")


def with_limits(config: Config, limits: dict[str, object]) -> Config:
    return replace(config, data={**config.data, "limits": {**config.section("limits"), **limits}})


def test_step_limits_override_the_defaults(config: Config) -> None:
    c = with_limits(config, {"memory_mb": 1024, "timeout_s": 60,
                             "steps": {"train": {"memory_mb": 4096, "timeout_s": None}}})
    train = settings_of(c, "train")
    assert (train.memory_mb, train.timeout_s) == (4096, 60.0)
    assert (train.batch_size, train.accumulation_steps, train.threads, train.nproc) == (64, 1, 1, 1)
    scan = settings_of(c, "scan-code")
    assert (scan.memory_mb, scan.batch_size) == (1024, None)
    limits = limits_of(train)
    assert limits.memory_bytes == 4096 * MIB and limits.timeout_s == 60.0
    assert not limits_of(settings_of(config, "train")).any


def test_a_retry_becomes_a_validated_config_and_a_snippet(config: Config) -> None:
    new = settings_of(config, "train").with_(memory_mb=2048, accumulation_steps=4)
    retried = apply(config, "train", new)
    assert retried.section("limits")["steps"]["train"]["memory_mb"] == 2048
    assert retried.section("train")["accumulation_steps"] == 4
    assert settings_of(retried, "train") == new
    assert config.section("train")["accumulation_steps"] == 1   # the original is untouched
    lines = snippet("train", new.changes_from(settings_of(config, "train")))
    assert lines == ["train:", "  accumulation_steps: 4", "limits:", "  steps:", "    train:",
                     "      memory_mb: 2048"]


def test_a_retry_the_schema_refuses_is_a_config_error(config: Config) -> None:
    with pytest.raises(ConfigError, match="memory_mb"):
        apply(config, "train", settings_of(config, "train").with_(memory_mb=1))
    with pytest.raises(ConfigError, match="no setting"):
        apply(config, "scan-code", Settings(batch_size=4))


def test_candidates_move_each_setting_only_towards_a_cure() -> None:
    current = Settings(memory_mb=512, timeout_s=100.0, batch_size=256, accumulation_steps=2,
                       threads=2, nproc=2)
    bounds = Bounds(max_memory_mb=1024, max_timeout_s=300.0, cpus=4)
    memory = candidates(current, FailureClass.OUT_OF_MEMORY, bounds)
    assert memory[0] == current
    assert all(512 <= (s.memory_mb or 0) <= 1024 for s in memory)
    assert all((s.accumulation_steps or 0) >= 2 for s in memory)
    assert all(256 / (s.accumulation_steps or 1) >= MIN_MICRO_BATCH for s in memory)
    assert all((s.threads or 0) <= 2 and (s.nproc or 0) <= 2 for s in memory)
    assert all(s.batch_size == 256 for s in memory)
    assert {s.memory_mb for s in memory} >= {512, 1024}
    slow = candidates(current, FailureClass.TIMEOUT, bounds)
    assert all(s.memory_mb == 512 for s in slow)
    assert all(100 <= (s.timeout_s or 0) <= 300 for s in slow)
    assert all((s.accumulation_steps or 9) <= 2 and (s.threads or 0) >= 2 for s in slow)
    assert max(s.threads or 0 for s in slow) == 4
    exhausted = candidates(Settings(open_files=64), FailureClass.RESOURCE_EXHAUSTED, bounds)
    assert sorted(s.open_files or 0 for s in exhausted) == [64, 128, 256, 512]


@pytest.mark.parametrize("table,message", [
    ("{}", "non-empty list"),
    ("- {id: a, class: nonsense, when: {exit_code: [1]}}", "unknown class"),
    ("- {id: a, class: timeout, when: {timed_out: true}}\n"
     "- {id: a, class: timeout, when: {timed_out: true}}", "duplicate id"),
    ("- {id: a, class: code-error, when: {log: '('}}", "bad regex"),
    ("- {id: a, class: code-error, when: {stdout: x}}", "unknown condition"),
    ("- {id: a, class: code-error, when: {}}", "non-empty 'when'"),
    ("- [unclosed", "not valid YAML"),
])
def test_a_broken_rules_table_is_refused_with_the_rule_named(table: str, message: str) -> None:
    with pytest.raises(AutofixError, match=message):
        load_rules(table, "rules.yaml")


def test_the_schema_takes_limits_for_every_registered_step() -> None:
    from ci_ml.config import config_schema
    from ci_ml.pipeline.registry import STEPS

    steps = config_schema()["$defs"]["limits"]["properties"]["steps"]["properties"]
    assert set(steps) == set(STEPS)
