"""Fixtures for the DAST tests: our server (tiny model), the weak server, a fake ZAP daemon."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.serve.conftest import served, tiny_model  # noqa: F401  (fixtures)

# Our own server on a tiny model: the same fixtures as the serve tests.


def _fixture_server(script: str) -> Iterator[str]:
    """A fixtures/weak_server/ script in a subprocess on a free loopback port."""
    import subprocess
    import sys

    from tests.conftest import FIXTURES

    proc = subprocess.Popen([sys.executable, str(FIXTURES / "weak_server" / script)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    port = int(proc.stdout.readline().split()[-1])
    yield f"http://127.0.0.1:{port}"
    proc.kill()
    proc.wait(timeout=10)


@pytest.fixture
def weak_server() -> Iterator[str]:
    yield from _fixture_server("server.py")


@pytest.fixture
def naive_server() -> Iterator[str]:
    yield from _fixture_server("naive_http.py")


@pytest.fixture
def fake_zap() -> Iterator[Any]:
    from tests.dast.fake_zap import FakeZap

    zap = FakeZap(api_key="s3cr3t-zap-key-for-tests")
    yield zap
    zap.close()
