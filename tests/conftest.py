"""Shared test helpers: run the real CLI as a user would, on copies of real fixtures."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.registry.servers import Distribution, Mlflow, start_distribution, start_mlflow

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "fixtures"
EXAMPLE = FIXTURES / "example"


@dataclass(frozen=True)
class CliResult:
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def run_cli(*args: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None,
            timeout: float = 600) -> CliResult:
    """Run ``python -m ci_ml`` in a subprocess: the real entry point, exit code and streams."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), "CI": "true", **(env or {})}
    full_env.pop("GITHUB_ACTIONS", None)
    proc = subprocess.run([sys.executable, "-m", "ci_ml", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, env=full_env, timeout=timeout,
                          check=False)
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One real Prometheus (Debian's) on 127.0.0.1 per test session (per xdist worker),
    shared by the server's metrics tests and the monitoring tests; targets are added with
    ``scrape(url)``."""
    from tests.serve.prometheus import Prometheus

    prom = Prometheus(tmp_path_factory.mktemp("prometheus"))
    yield prom
    prom.stop()


@pytest.fixture
def example_project(tmp_path: Path) -> Path:
    """A private copy of the bundled example, with its own cache directory."""
    dest = tmp_path / "example"
    shutil.copytree(EXAMPLE, dest, ignore=shutil.ignore_patterns(".ci-ml-cache", "__pycache__"))
    # The example audits its pins against ../advisories/pypa-vulns (the vendored OSV mirror).
    (tmp_path / "advisories").symlink_to(FIXTURES / "advisories", target_is_directory=True)
    return dest


@pytest.fixture
def fast_example(example_project: Path) -> Path:
    """The example with a short training run: for tests about plumbing, not accuracy."""
    cfg = example_project / "ci-ml.yaml"
    text = cfg.read_text().replace("epochs: 15", "epochs: 2")
    text = text.replace("channels: [32, 64, 128]", "channels: [8, 16, 16]")
    text = text.replace("accuracy: {min: 0.95}", "accuracy: {min: 0.5}")
    text = text.replace("macro_f1: {min: 0.95}", "macro_f1: {min: 0.3}")
    # One cheap pruning step: the plumbing is the point here, not the speedup.
    text = text.replace("  ratio: 0.75 ", "  ratio: 0.5\n  steps: 1\n  finetune_epochs: 1\n"
                        "  latency_rounds: 3 ")
    cfg.write_text(text)
    return example_project


def make_training_diverge(cfg: Path) -> None:
    """Edit the fast example's config so that training overflows in its first epoch: an MLP
    (no batch norm to absorb the scale) on inputs scaled up to ~1e13 (data.scale divides),
    plain SGD at the largest learning rate the schema admits."""
    text = cfg.read_text()
    for old, new in (("name: cnn", "name: mlp"), ("input_shape: [1, 8, 8]", "input_shape: [64]"),
                     ("channels: [8, 16, 16]", "hidden: [32]"), ("scale: 16.0", "scale: 1.0e-12"),
                     ("learning_rate: 0.002", "learning_rate: 10"),
                     ("optimizer: adam", "optimizer: sgd")):
        assert old in text, old
        text = text.replace(old, new, 1)
    cfg.write_text(text)


@pytest.fixture(scope="session")
def distribution(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Distribution]:
    """A CNCF distribution registry on 127.0.0.1, once per test session."""
    yield from start_distribution(tmp_path_factory.mktemp("distribution"))


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mlflow]:
    """An MLflow tracking server (SQLite store) on 127.0.0.1, once per test session."""
    yield from start_mlflow(tmp_path_factory.mktemp("mlflow"))


@pytest.fixture(scope="session", autouse=True)
def sarif_files_pass_githubs_rules(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """At the end of the session, every report.sarif any test wrote (under this session's
    temporary directories) goes through the SARIF multitool's GitHub rules: one error or
    warning fails the run."""
    yield
    from tests.sarif_multitool import problems

    written = sorted(tmp_path_factory.getbasetemp().rglob("*.sarif"))
    found = problems(written)
    assert not found, (f"{len(found)} SARIF problem(s) in {len(written)} file(s):\n"
                       + "\n".join(found[:40]))
