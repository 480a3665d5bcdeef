"""Real data sets that packages on the index ship, as a user's project would hold them.

No data is generated here: the CSVs are the packages' own files (found on disk without
importing the packages), copied into a project directory; vega_datasets' cars ship as
JSON and are written to Parquet unchanged. Each project is built (``ci-ml init``, then
``ci-ml run``) once per test session and shared by the xdist workers under a lock.
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import FIXTURES, CliResult, run_cli

SKLEARN_EXAMPLE = FIXTURES / "sklearn-example"


def shipped(package: str, *parts: str) -> Path:
    """A data file inside an installed package (its top-level module is not imported)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        pytest.fail(f"{package} is not installed (see pyproject.toml / Makefile)")
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*parts)
    assert path.is_file(), path
    return path


def _copy(src: Path) -> Callable[[Path], Path]:
    def make(data_dir: Path) -> Path:
        dest = data_dir / src.name
        shutil.copy(src, dest)
        return dest
    return make


def _cars_parquet(data_dir: Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = json.loads(shipped("vega_datasets", "_data", "cars.json").read_text())
    dest = data_dir / "cars.parquet"
    pq.write_table(pa.Table.from_pylist(rows), dest)
    return dest


@dataclass(frozen=True)
class Dataset:
    name: str
    make: Callable[[Path], Path]          # writes the data file into data/, returns it
    init_args: tuple[str, ...] = ()       # what a user passes to `ci-ml init`


PENGUINS = Dataset("penguins", lambda d: _copy(shipped("palmerpenguins", "data",
                                                       "penguins.csv"))(d))
HITTERS = Dataset("hitters", lambda d: _copy(shipped("ISLP", "data", "Hitters.csv"))(d))
CARS = Dataset("cars", _cars_parquet, ("--target", "Miles_per_Gallon"))


@dataclass(frozen=True)
class Built:
    root: Path
    init: CliResult
    run: CliResult

    @property
    def out(self) -> Path:
        return self.root / "ci-ml-out"

    def json(self, rel: str) -> dict:
        return json.loads((self.out / rel).read_text())


def project_dir(root: Path, dataset: Dataset) -> Path:
    """A fresh project holding only the data file, as a user starts."""
    shutil.rmtree(root, ignore_errors=True)
    (root / "data").mkdir(parents=True)
    dataset.make(root / "data")
    return root


def build(root: Path, dataset: Dataset) -> Built:
    project_dir(root, dataset)
    init = run_cli("init", *dataset.init_args, cwd=root)
    run = run_cli("run", "-q", cwd=root) if init.code == 0 else init
    (root / "build.json").write_text(json.dumps({
        "init": [init.code, init.stdout, init.stderr], "run": [run.code, run.stdout, run.stderr]}))
    return Built(root, init, run)


def shared(base_temp: Path, dataset: Dataset) -> Built:
    """One built project per data set and test session, shared by every xdist worker."""
    top = base_temp.parent if os.environ.get("PYTEST_XDIST_WORKER") else base_temp
    root = top / f"real-{dataset.name}"
    with open(top / f"real-{dataset.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        record = root / "build.json"
        if not record.is_file():
            return build(root, dataset)
        saved = json.loads(record.read_text())
        return Built(root, CliResult(*saved["init"]), CliResult(*saved["run"]))


def clone(built: Built, dest: Path) -> Path:
    shutil.copytree(built.root, dest, symlinks=True)
    return dest


@pytest.fixture(scope="session")
def penguins(tmp_path_factory: pytest.TempPathFactory) -> Built:
    return shared(tmp_path_factory.getbasetemp(), PENGUINS)


@pytest.fixture(scope="session")
def hitters(tmp_path_factory: pytest.TempPathFactory) -> Built:
    return shared(tmp_path_factory.getbasetemp(), HITTERS)


@pytest.fixture(scope="session")
def cars(tmp_path_factory: pytest.TempPathFactory) -> Built:
    return shared(tmp_path_factory.getbasetemp(), CARS)


def copy_example(dest: Path) -> Path:
    """A private copy of fixtures/sklearn-example (it audits ../advisories like the example)."""
    shutil.copytree(SKLEARN_EXAMPLE, dest, ignore=shutil.ignore_patterns(
        ".ci-ml-cache", "ci-ml-out", "__pycache__"))
    link = dest.parent / "advisories"
    if not link.exists():
        link.symlink_to(FIXTURES / "advisories", target_is_directory=True)
    return dest


@pytest.fixture(scope="session")
def example_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, CliResult]:
    """The sklearn example through `ci-ml run`, once per session (shared by xdist workers)."""
    base = tmp_path_factory.getbasetemp()
    top = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    root = top / "sklearn-example" / "project"
    with open(top / "sklearn-example.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        record = root.parent / "run.json"
        if not record.is_file():
            shutil.rmtree(root.parent, ignore_errors=True)
            root.parent.mkdir(parents=True)
            copy_example(root)
            result = run_cli("run", cwd=root)
            record.write_text(json.dumps([result.code, result.stdout, result.stderr]))
        return root, CliResult(*json.loads(record.read_text()))
