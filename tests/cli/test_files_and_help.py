"""What a user sees of files and commands: written files follow the umask; --help lists steps."""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from ci_ml.fsutil import atomic_write_text
from ci_ml.pipeline.registry import STEPS
from tests.conftest import EXAMPLE, run_cli


@contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize(("mask", "expected"), [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_atomic_writes_get_the_umask_not_0600(tmp_path: Path, mask: int, expected: int) -> None:
    with umask(mask):
        atomic_write_text(tmp_path / "f.txt", "x\n")
    assert mode(tmp_path / "f.txt") == expected


def test_init_and_generate_write_files_other_users_can_read(tmp_path: Path) -> None:
    """A container that copies the project runs as another user: 0600 files lock it out."""
    root = tmp_path / "proj"
    (root / "data").mkdir(parents=True)
    for name in ("train.csv", "test.csv"):
        shutil.copy(EXAMPLE / "data" / name, root / "data" / name)
    with umask(0o022):
        assert run_cli("init", root).code == 0
        # This checkout's ci-ml is an editable install: say which commit the jobs install.
        with open(root / "ci-ml.yaml", "a") as cfg:
            cfg.write(f"\nci:\n  source: {{url: 'https://github.com/acme/ci-ml', ref: '{'0' * 40}'}}\n")
        result = run_cli("generate", "gitlab", "--config", root / "ci-ml.yaml", "--output", root)
    assert result.code == 0, result.output
    for path in (root / "ci-ml.yaml", root / ".gitlab-ci.yml", root / ".gitlab/ci-ml/setup.yml"):
        assert mode(path) == 0o644, path


def test_run_help_lists_every_step_only_accepts() -> None:
    result = run_cli("run", "--help")
    assert result.code == 0
    text = " ".join(result.stdout.split())
    assert "--only STEP" in text
    listed = text.split("Steps:", 1)[1]
    for name in STEPS:
        assert name in listed, name
