"""Fixtures for the DAST tests: our server (tiny model), the weak server, a fake ZAP daemon."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ci_ml.serve.model import ServedModel
from ci_ml.serve.server import RunningServer, start_background
from ci_ml.serve.settings import Limits, ServeSettings
from tests.serve.factory import make_model


@pytest.fixture
def tiny_model(tmp_path: Path) -> Path:
    return make_model(tmp_path / "model")


@pytest.fixture
def served(tiny_model: Path) -> Iterator[RunningServer]:
    settings = ServeSettings(port=0, limits=Limits(max_batch=8, max_body_bytes=4096,
                                                   request_timeout_s=5, drain_timeout_s=2))
    running = start_background(ServedModel(tiny_model), settings)
    yield running
    running.stop()


@pytest.fixture
def weak_server() -> Iterator[str]:
    """fixtures/weak_server/server.py in a subprocess on a free loopback port."""
    import subprocess
    import sys

    from tests.conftest import FIXTURES

    proc = subprocess.Popen([sys.executable, str(FIXTURES / "weak_server" / "server.py")],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    port = int(proc.stdout.readline().split()[-1])
    yield f"http://127.0.0.1:{port}"
    proc.kill()
    proc.wait(timeout=10)


@pytest.fixture
def fake_zap() -> Iterator[Any]:
    from tests.dast.fake_zap import FakeZap

    zap = FakeZap(api_key="s3cr3t-zap-key-for-tests")
    yield zap
    zap.close()
