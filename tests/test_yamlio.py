"""The strict YAML reader every config, waivers and advisory file goes through."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ci_ml.errors import ConfigError, InputError
from ci_ml.yamlio import check_finite, parse_yaml, read_text_file


def test_plain_documents_and_merge_keys_load() -> None:
    doc = parse_yaml("base: &b {x: 1, y: 2}\nitem:\n  <<: *b\n  y: 3\n", "f.yaml")
    assert doc == {"base": {"x": 1, "y": 2}, "item": {"x": 1, "y": 3}}


@pytest.mark.parametrize(("text", "message"), [
    ("a: 1\nb: 2\na: 3\n", "line 3: duplicate key 'a' (first on line 1, again on line 3)"),
    ("x:\n  - {k: 1, k: 2}\n", "duplicate key 'k'"),
    ("1: a\n1: b\n", "duplicate key 1"),
    ("l: &l [*l]\n", "recursive alias"),
    ("d: " + "[" * 200 + "]" * 200 + "\n", "nested deeper than 64 levels"),
    ("a: &a " + "[" * 40 + "1" + "]" * 40 + "\nb: " + "[" * 40 + "*a" + "]" * 40 + "\n",
     "nested deeper than 64 levels once aliases are expanded"),
    ("a: [oops\n", "YAML syntax error"),
])
def test_hostile_documents_are_one_error_naming_file_and_line(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_yaml(text, "f.yaml")
    assert str(info.value).startswith("f.yaml: ") and message in str(info.value)


def test_an_alias_bomb_fails_fast() -> None:
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 12)]
    with pytest.raises(ConfigError, match="expand to more than 200000 values"):
        parse_yaml("\n".join(lines), "bomb.yaml")


def test_the_error_class_is_the_callers() -> None:
    with pytest.raises(InputError):
        parse_yaml("a: 1\na: 2\n", "advisory.yaml", InputError)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_numbers_are_named_by_key_path(value: float) -> None:
    with pytest.raises(ConfigError, match=r"c.yaml: train.lr\[1\]: .* is not a finite number"):
        check_finite({"train": {"lr": [0.1, value]}}, "c.yaml")


def test_special_files_are_refused_before_reading(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    for path, kind in ((Path("/dev/zero"), "a character device"), (tmp_path / "fifo", "a FIFO"),
                       (tmp_path, "a directory")):
        with pytest.raises(ConfigError, match=kind):
            read_text_file(path, "config file")
    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * 2048)
    with pytest.raises(ConfigError, match="larger than a config file may be"):
        read_text_file(big, "config file", max_bytes=1024)
