from __future__ import annotations

from pathlib import Path

import pytest

from tests.gate.trained import clone, train_project


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_project(tmp_path_factory.mktemp("trained") / "example")


@pytest.fixture
def project(trained: Path, tmp_path: Path) -> Path:
    return clone(trained, tmp_path / "example")
