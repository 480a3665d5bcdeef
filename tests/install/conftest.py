"""A wheel of ci-ml installed as a user installs it: built once per session, in a fresh virtual
environment outside the checkout, with nothing of the checkout on sys.path."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO

# [train]'s lowest torch: the CPU build on this machine's disk (the range also admits 2.14.1).
TORCH_CONSTRAINT = (REPO / "constraints.txt").read_text()


@dataclass(frozen=True)
class Venv:
    root: Path

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    def env(self) -> dict[str, str]:
        """The venv's commands first on PATH; no PYTHONPATH, no CI variables of ours."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("CI_ML_", "PYTHONPATH", "VIRTUAL_ENV", "GITHUB_"))}
        env["PATH"] = f"{self.bin}{os.pathsep}{env.get('PATH', '')}"
        env["CI"] = "true"
        return env

    def run(self, *args: str | Path, cwd: Path, timeout: float = 1500
            ) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.bin / "ci-ml"), *map(str, args)], cwd=cwd, env=self.env(),
                              capture_output=True, text=True, timeout=timeout, check=False)


def build_wheel(dest: Path) -> Path:
    """`python -m build --wheel` of a copy of the sources (the checkout stays clean)."""
    src = dest / "src"
    shutil.copytree(REPO / "ci_ml", src / "ci_ml",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    proc = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation",
                           "--outdir", str(dest / "dist"), str(src)],
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (wheel,) = (dest / "dist").glob("ci_ml-*.whl")
    return wheel


def make_venv(root: Path, requirement: str) -> Venv:
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True, timeout=300)
    constraints = root / "constraints.txt"
    constraints.write_text(TORCH_CONSTRAINT)
    env = {**os.environ, "PIP_CONSTRAINT": str(constraints)}
    env.pop("PYTHONPATH", None)
    proc = subprocess.run([str(root / "bin" / "python"), "-m", "pip", "install", "--quiet",
                           "--no-compile", "--disable-pip-version-check", requirement],
                          capture_output=True, text=True, env=env, timeout=1500, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return Venv(root)


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="session")
def full_venv(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> Venv:
    """Everything: what `ci-ml run` needs. One per session, shared by the wheel tests."""
    return make_venv(tmp_path_factory.mktemp("venv-all") / "venv", f"{wheel}[all]")


@pytest.fixture(scope="session")
def core_venv(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> Venv:
    """The core install a gate job makes: no torch, no scanners, no Docker SDK."""
    return make_venv(tmp_path_factory.mktemp("venv-core") / "venv", str(wheel))
