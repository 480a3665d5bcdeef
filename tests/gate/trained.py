"""A trained copy of the example project, shared by the gate, registry, attest and deploy tests.

Training once per test module and copying the project (with its step cache and out
dir) per test keeps each test to the commands it is about: a `ci-ml gate` on a copy
restores data-check/train/prune from the copied cache instead of retraining.
"""

from __future__ import annotations

import datetime
import fcntl
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from ci_ml.attest.keys import generate_keypair
from tests.conftest import EXAMPLE, FIXTURES, run_cli


def edit_config(project: Path, change: Callable[[dict[str, Any]], None]) -> None:
    path = project / "ci-ml.yaml"
    doc = yaml.safe_load(path.read_text())
    change(doc)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def _fast(doc: dict[str, Any]) -> None:
    # Promotions are signed by default: the project's key pair, as `ci-ml init` makes it.
    doc["registry"] = {"signing_key": "keys/signing.pem", "verify_key": "keys/signing.pem.pub"}
    # Six epochs of the small CNN: about 0.95 test accuracy, a model the monitoring tests can
    # see a 5-point accuracy drop in (two epochs gave 0.71: too noisy a reference).
    doc["train"]["epochs"] = 6
    doc["model"]["params"]["channels"] = [8, 16, 16]
    doc["prune"].update({"ratio": 0.5, "steps": 1, "finetune_epochs": 1, "latency_rounds": 3})
    for stage in ("staging", "production"):
        doc["policy"][stage]["metrics"] = {"accuracy": {"min": 0.5}}


def link_advisories(project: Path) -> None:
    """The example audits its pins against ../advisories/pypa-vulns (the vendored OSV mirror)."""
    link = project.parent / "advisories"
    if not link.exists():
        link.symlink_to(FIXTURES / "advisories", target_is_directory=True)


def train_project(dest: Path) -> Path:
    """Copy the example to ``dest``, shrink training, run the whole pipeline into ``out``."""
    shutil.copytree(EXAMPLE, dest, ignore=shutil.ignore_patterns(".ci-ml-cache", "__pycache__"))
    link_advisories(dest)
    generate_keypair(dest / "keys" / "signing.pem")
    edit_config(dest, _fast)
    result = run_cli("run", "--config", dest / "ci-ml.yaml", "--out", dest / "out", "-q")
    assert result.code == 0, result.output
    return dest


def shared_trained_project(base_temp: Path) -> Path:
    """One trained project per test session, shared by every xdist worker (read-only: tests
    clone it). The first worker to take the lock trains; the others wait and reuse it."""
    root = base_temp.parent if os.environ.get("PYTEST_XDIST_WORKER") else base_temp
    target = root / "gate-trained-example"
    with open(root / "gate-trained-example.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / "out" / "decision.json").is_file():
            shutil.rmtree(target, ignore_errors=True)
            train_project(target)
    return target


def clone(trained: Path, dest: Path) -> Path:
    shutil.copytree(trained, dest, symlinks=True)
    link_advisories(dest)
    return dest


def variant(out_dir: Path, dest: Path, tag: str) -> Path:
    """A copy of an out dir whose ONNX model differs (its doc string): a distinct model digest."""
    import onnx

    shutil.copytree(out_dir, dest)
    model = onnx.load(str(dest / "candidate" / "model.onnx"))
    model.doc_string = f"variant {tag}"
    onnx.save(model, str(dest / "candidate" / "model.onnx"))
    return dest


def cli(project: Path, *args: str | Path, env: dict[str, str] | None = None) -> Any:
    """Run a command against the project's config and out dir."""
    return run_cli(*args, "--config", project / "ci-ml.yaml", "--out", project / "out",
                   cwd=project, env=env)


def days(n: int) -> str:
    return (datetime.date.today() + datetime.timedelta(days=n)).isoformat()


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One trained example per test session (see shared_trained_project)."""
    return shared_trained_project(tmp_path_factory.getbasetemp())


@pytest.fixture
def project(trained: Path, tmp_path: Path) -> Path:
    """A private clone of the trained example."""
    return clone(trained, tmp_path / "example")
