"""Fixtures for the model-server tests: a tiny ONNX model and a server on a loopback port."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

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
