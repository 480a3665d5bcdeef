from __future__ import annotations

from pathlib import Path

import pytest

from tests.gate.trained import clone, shared_trained_project


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_trained_project(tmp_path_factory.getbasetemp())


@pytest.fixture
def project(trained: Path, tmp_path: Path) -> Path:
    return clone(trained, tmp_path / "example")
