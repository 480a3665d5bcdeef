"""Schemathesis on /openapi.json, bounded: every check, no failure.

The document states what the server accepts (value bounds after preprocessing, the batch
limit, required fields), so no document-valid request may be refused (positive data
acceptance), no invalid one accepted, and every answer matches the documented schemas.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ci_ml.serve.server import load_model, start_background
from ci_ml.serve.settings import Limits, ServeSettings
from tests.serve.factory import make_mixed_model, make_model

ST = Path(sys.executable).with_name("st")
CONFIG = Path(__file__).with_name("schemathesis.toml")


@pytest.mark.parametrize("kind", ["standardized", "mixed"])
def test_schemathesis_finds_nothing(tmp_path: Path, kind: str) -> None:
    if not ST.exists():
        pytest.fail(f"schemathesis is not installed beside {sys.executable} (dev extra)")
    path = (make_model(tmp_path / "m", standardize=True) if kind == "standardized"
            else make_mixed_model(tmp_path / "m"))
    settings = ServeSettings(port=0, limits=Limits(max_batch=16))
    with start_background(load_model(path, settings), settings) as srv:
        run = subprocess.run([str(ST), "--config-file", str(CONFIG), "run",
                              srv.url + "/openapi.json", "--checks", "all",
                              "--max-examples", "25", "--seed", "17", "--no-color",
                              "--request-timeout", "10"],
                             capture_output=True, text=True, timeout=600, check=False,
                             cwd=tmp_path)      # its .schemathesis/ cache stays out of the tree
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "No issues found" in run.stdout
    assert "8 selected / 8 total" in run.stdout        # every documented operation was fuzzed
