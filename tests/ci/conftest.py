"""Fixtures of the CI client tests: ci-ml's repository at a pinned commit, shared per session."""

from __future__ import annotations

import pytest

from tests.ci.clients import Source, shared_source


@pytest.fixture(scope="session")
def source(tmp_path_factory: pytest.TempPathFactory) -> Source:
    return shared_source(tmp_path_factory.getbasetemp())
