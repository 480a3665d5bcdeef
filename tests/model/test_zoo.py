"""The model zoo: the example CNN's size, and the torch-free preflight table."""

from __future__ import annotations

from ci_ml.model.layout import ZOO_INPUT_RANKS
from ci_ml.model.zoo import ZOO, ModelSpec, build_model, count_macs, count_params


def test_example_cnn_is_about_2_4m_macs() -> None:
    model = build_model(ModelSpec("cnn", (1, 8, 8), 10, {"channels": [32, 64, 128]}))
    macs = count_macs(model, (1, 8, 8))
    assert 2_300_000 <= macs <= 2_500_000
    assert count_params(model) < 100_000


def test_preflight_table_matches_the_zoo() -> None:
    assert set(ZOO_INPUT_RANKS) == set(ZOO)
