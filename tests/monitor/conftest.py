"""Fixtures of the monitoring tests: the trained example (shared per session), its served
model, the example's splits, and the palmerpenguins data (categories, missing values)."""

from __future__ import annotations

import csv
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from ci_ml.monitor.logs import Window
from ci_ml.serve.model import ServedModel
from tests.gate.trained import project, trained  # noqa: F401  (fixtures)
from tests.monitor.replay import Split, read_split

WINDOW_ROWS = 150      # requests per replayed window: under half the test split


@pytest.fixture(scope="session")
def digits_model(trained: Path) -> ServedModel:  # noqa: F811
    return ServedModel(trained / "out" / "candidate" / "model.onnx")


@pytest.fixture(scope="session")
def test_split(trained: Path) -> Split:  # noqa: F811
    return read_split(trained / "data" / "test.csv", "label")


@pytest.fixture(scope="session")
def train_split(trained: Path) -> Split:  # noqa: F811
    return read_split(trained / "data" / "train.csv", "label")


@pytest.fixture(scope="session")
def now() -> datetime:
    return datetime.now(UTC)


@pytest.fixture(scope="session")
def window(now: datetime) -> Window:
    return Window(now - timedelta(hours=1), now)


def penguins_csv() -> Path:
    import palmerpenguins

    return Path(palmerpenguins.__file__).parent / "data" / "penguins.csv"


@pytest.fixture(scope="session")
def penguins(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, str]]]:
    """A training split of palmerpenguins without the island Torgersen (seeded half of the
    other rows), and the held-out rows: the other half plus every Torgersen penguin."""
    with open(penguins_csv(), newline="") as fh:
        rows = list(csv.DictReader(fh))
    rng = np.random.default_rng(0)
    others = [r for r in rows if r["island"] != "Torgersen"]
    order = rng.permutation(len(others))
    train = [others[i] for i in order[: len(others) // 2]]
    held_out = [others[i] for i in order[len(others) // 2:]] + \
        [r for r in rows if r["island"] == "Torgersen"]
    path = tmp_path_factory.mktemp("penguins") / "train.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(train)
    return path, held_out
