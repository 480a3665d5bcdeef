"""Fixtures for scanner tests: private copies of the planted and clean projects."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


def _copy_project(name: str, tmp_path: Path) -> Path:
    dest = tmp_path / name
    shutil.copytree(FIXTURES / name, dest,
                    ignore=shutil.ignore_patterns(".ci-ml-cache", "__pycache__"))
    advisories = tmp_path / "advisories"
    if not advisories.exists():
        advisories.symlink_to(FIXTURES / "advisories", target_is_directory=True)
    return dest


@pytest.fixture
def planted(tmp_path: Path) -> Path:
    """A copy of fixtures/planted: every scanner has planted problems to find."""
    return _copy_project("planted", tmp_path)


@pytest.fixture
def clean(tmp_path: Path) -> Path:
    """A copy of fixtures/clean: the same layout, nothing to find."""
    return _copy_project("clean", tmp_path)


def scan_result(out: Path, scanner: str) -> dict[str, Any]:
    return json.loads((out / "scans" / f"{scanner}.json").read_text("utf-8"))


def ids(result: dict[str, Any]) -> list[str]:
    return sorted(f["id"] for f in result["findings"])


def _docker_ok() -> bool:
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=20,
                              check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[None]:
    """A reachable Docker engine; started here (as ENVIRONMENT.md describes) if it is not."""
    started: subprocess.Popen[bytes] | None = None
    if not _docker_ok() and shutil.which("dockerd") and os.geteuid() == 0:
        log = open(os.path.join(tempfile.gettempdir(), "ci-ml-test-dockerd.log"), "wb")  # noqa: SIM115
        started = subprocess.Popen(["dockerd", "--storage-driver=vfs", "--iptables=false",
                                    "--bridge=none"], stdout=log, stderr=log)
        deadline = time.monotonic() + 60
        while not _docker_ok() and time.monotonic() < deadline:
            time.sleep(1)
    if not _docker_ok():
        pytest.fail("docker tests need a Docker engine (start dockerd; see ENVIRONMENT.md)")
    yield
    if started is not None:
        started.terminate()
        started.wait(timeout=30)
