"""Data paths as users get them wrong, through `ci-ml data check`: exit 2, one line naming
the config key and the file (and the line where there is one), nothing written.

The base is a real project: the Palmer penguins, split into train and test."""

from __future__ import annotations

import codecs
import json
import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import CliResult, run_cli
from tests.datasets.projects import shipped

CONFIG = """\
data:
  train: data/train.csv
  test: data/test.csv
  target: species
model:
  name: mlp
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "penguins"
    (root / "data").mkdir(parents=True)
    lines = shipped("palmerpenguins", "data", "penguins.csv").read_text().splitlines()
    (root / "data" / "train.csv").write_text("\n".join(lines[:281]) + "\n")
    (root / "data" / "test.csv").write_text("\n".join(lines[:1] + lines[281:]) + "\n")
    (root / "ci-ml.yaml").write_text(CONFIG)
    return root


def _train(root: Path) -> Path:
    return root / "data" / "train.csv"


def ragged(root: Path) -> str:
    lines = _train(root).read_text().splitlines()
    lines[41] = ",".join(lines[41].split(",")[:5])
    _train(root).write_text("\n".join(lines) + "\n")
    return "line 42: expected 8 fields, got 5"


def latin1(root: Path) -> str:
    text = _train(root).read_text().replace("Dream", "Dr\u00e9am", 1)
    _train(root).write_bytes(text.encode("latin-1"))
    return "is not utf-8 text (byte "


def utf16(root: Path) -> str:
    _train(root).write_bytes(codecs.BOM_UTF16_LE + _train(root).read_text().encode("utf-16-le"))
    return "is UTF-16 text"


def binary(root: Path) -> str:
    _train(root).write_bytes(os.urandom(2048) + b"\x00" * 64)
    return "is binary data, not a CSV text file"


def header_only(root: Path) -> str:
    _train(root).write_text(_train(root).read_text().splitlines()[0] + "\n")
    return "has a header but no data rows"


def empty(root: Path) -> str:
    _train(root).write_text("")
    return "is empty"


def duplicate_header(root: Path) -> str:
    text = _train(root).read_text()
    _train(root).write_text(text.replace("bill_depth_mm", "bill_length_mm", 1))
    return "duplicate column 'bill_length_mm' in the header (columns 3 and 4)"


def oversized_field(root: Path) -> str:
    lines = _train(root).read_text().splitlines()
    cells = lines[10].split(",")
    cells[1] = "A" * (2 << 20)
    lines[10] = ",".join(cells)
    _train(root).write_text("\n".join(lines) + "\n")
    return ("data row 10: column 'island' has a field of 2097152 bytes, more than the "
            "1048576-byte limit")


def huge_row(root: Path) -> str:
    lines = _train(root).read_text().splitlines()
    cells = lines[10].split(",")
    cells[6] = "x" * (9 << 20)
    lines[10] = ",".join(cells)
    _train(root).write_text("\n".join(lines) + "\n")
    return "data row 10: column 'sex' has a field of 9437184 bytes"


def dev_zero(root: Path) -> str:
    _train(root).unlink()
    _train(root).symlink_to("/dev/zero")
    return "is a character device, expected a CSV or Parquet file"


def fifo(root: Path) -> str:
    _train(root).unlink()
    os.mkfifo(_train(root))
    return "is a FIFO (named pipe)"


def directory(root: Path) -> str:
    _train(root).unlink()
    _train(root).mkdir()
    return "is a directory"


def broken_parquet(root: Path) -> str:
    bad = root / "data" / "train.parquet"
    bad.write_bytes(b"PAR1" + os.urandom(512))
    cfg = root / "ci-ml.yaml"
    cfg.write_text(cfg.read_text().replace("data/train.csv", "data/train.parquet"))
    return "not a readable Parquet file"


CASES: list[Callable[[Path], str]] = [ragged, latin1, utf16, binary, header_only, empty,
                                      duplicate_header, oversized_field, huge_row, dev_zero,
                                      fifo, directory, broken_parquet]


def _run_guarded(root: Path) -> CliResult:
    # A FIFO must be refused without being opened: if ci-ml ever opens it, this writer
    # unblocks the reader instead of the test hanging.
    if _train(root).is_fifo():
        def unblock() -> None:
            try:
                fd = os.open(_train(root), os.O_WRONLY | os.O_NONBLOCK)
                os.close(fd)
            except OSError:
                pass
        timer = threading.Timer(20, unblock)
        timer.start()
        try:
            return run_cli("data", "check", "--out", "out", cwd=root, timeout=120)
        finally:
            timer.cancel()
    return run_cli("data", "check", "--out", "out", cwd=root, timeout=120)


@pytest.mark.parametrize("mutate", CASES, ids=[c.__name__ for c in CASES])
def test_bad_data_file_is_one_clear_error(project: Path, mutate: Callable[[Path], str]) -> None:
    expected = mutate(project)
    result = _run_guarded(project)
    assert result.code == 2, result.output
    # One error line (a problem found while streaming comes after the step's progress line).
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, result.stderr
    assert "data.train: " in lines[0], lines[0]
    assert expected.lower() in lines[0].lower(), lines[0]
    assert "Traceback" not in result.output and "internal error" not in result.output
    # Nothing half-written: a problem found while streaming leaves at most the empty out dir.
    out = project / "out"
    assert not out.exists() or not any(out.iterdir()), list(out.iterdir())
    # No cache entry either: only the run history, which records the failed run as a bad
    # input (autofix reads it there, and never retries one).
    cache = project / ".ci-ml-cache"
    assert not cache.exists() or [p.name for p in cache.iterdir()] == ["history"]
    if cache.exists():
        (record,) = [json.loads(line) for f in (cache / "history").glob("*.jsonl")
                     for line in f.read_text().splitlines()]
        assert record["step"] == "data-check" and record["failure"]["class"] == "bad-input"


def test_training_refuses_the_same_files(project: Path) -> None:
    ragged(project)
    result = run_cli("train", "--out", "out", cwd=project)
    assert result.code == 2 and "line 42: expected 8 fields, got 5" in result.stderr
    assert not (project / "out").exists()


def test_encoding_and_delimiter_are_configurable(project: Path) -> None:
    for split in ("train", "test"):
        path = project / "data" / f"{split}.csv"
        text = path.read_text().replace(",", ";").replace("Dream", "Dr\u00e9am")
        path.write_bytes(text.encode("cp1252"))
    cfg = project / "ci-ml.yaml"
    cfg.write_text(cfg.read_text().replace("  target: species\n", "  target: species\n"
                                           "  encoding: cp1252\n  delimiter: ';'\n"))
    result = run_cli("data", "infer", "--out", "out", cwd=project)
    assert result.code == 0, result.output
    assert "island: category, feature" in result.stdout
    shutil.rmtree(project / "out")
