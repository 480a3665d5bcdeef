"""The model zoo: the example CNN's size, and the torch-free preflight table."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ci_ml.errors import ConfigError
from ci_ml.model.layout import ZOO_INPUT_RANKS
from ci_ml.model.zoo import ZOO, ModelSpec, build_model, count_macs, count_params


def test_example_cnn_is_about_2_4m_macs() -> None:
    model = build_model(ModelSpec("cnn", (1, 8, 8), 10, {"channels": [32, 64, 128]}))
    macs = count_macs(model, (1, 8, 8))
    assert 2_300_000 <= macs <= 2_500_000
    assert count_params(model) < 100_000


def test_preflight_table_matches_the_zoo() -> None:
    assert set(ZOO_INPUT_RANKS) == set(ZOO)


def _module(directory: Path, name: str, body: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.py").write_text(body)


def test_factories_are_checked_before_they_are_called(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "called"
    # An installed package (outside the project) with an unannotated function: refused
    # before the call, so the marker is never written.
    site = tmp_path / "site"
    _module(site, "thirdparty_helpers", f"def make(**kw):\n    open({str(marker)!r}, 'w')\n")
    monkeypatch.syspath_prepend(str(site))
    project = tmp_path / "project"
    project.mkdir()
    spec = ModelSpec("thirdparty_helpers:make", (4,), 2, {})
    with pytest.raises(ConfigError, match="not annotated to return a torch.nn.Module"):
        build_model(spec, project)
    assert not marker.exists()


@pytest.mark.parametrize(("name", "message"), [
    ("os:system", "'os' is a standard-library module"),
    ("subprocess:run", "'subprocess' is a standard-library module"),
    ("antigravity:geohash", "'antigravity' is a standard-library module"),
    ("torch:load", "is a function that is not annotated"),
    ("torch:zeros", "is a builtin"),
    ("torch.nn:Linear.__init__.__globals__", "dunder"),
    ("os.path:join; rm -rf /", "expected a zoo name"),
])
def test_unsafe_factories_are_config_errors_naming_the_key(name: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_model(ModelSpec(name, (4,), 2, {}), Path.cwd())
    assert str(info.value).startswith("model.name") and message in str(info.value)


def test_good_factories_are_accepted_and_their_arguments_checked(tmp_path: Path) -> None:
    project = tmp_path / "project"
    _module(project, "my_models", (
        "import torch\n"
        "def plain(input_shape, num_classes, width=4):\n"
        "    return torch.nn.Linear(input_shape[0], num_classes)\n"
        "class Net(torch.nn.Module):\n"
        "    def __init__(self, input_shape, num_classes):\n"
        "        super().__init__()\n"
        "        self.fc = torch.nn.Linear(input_shape[0], num_classes)\n"))
    assert isinstance(build_model(ModelSpec("my_models:plain", (4,), 2, {"width": 8}), project),
                      torch.nn.Linear)
    assert isinstance(build_model(ModelSpec("my_models:Net", (4,), 2, {}), project), torch.nn.Module)
    with pytest.raises(ConfigError, match="model.params.depth: my_models:plain takes no argument"):
        build_model(ModelSpec("my_models:plain", (4,), 2, {"depth": 3}), project)
