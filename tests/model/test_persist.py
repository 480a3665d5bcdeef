"""Saving and loading models: safetensors only, weights pinned by hash, pickles refused."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

from ci_ml.errors import InputError
from ci_ml.fsutil import sha256_file
from ci_ml.model.card import numeric_card
from ci_ml.model.persist import (
    SPEC,
    WEIGHTS,
    load_model,
    looks_like_pickle,
    save_model,
)
from ci_ml.model.zoo import ModelSpec, build_model

SPEC_MLP = ModelSpec("mlp", (4,), 3, {"hidden": [8]})


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    model = build_model(SPEC_MLP)
    card = numeric_card(SPEC_MLP.to_json(), ("a", "b", "c"), ("f1", "f2", "f3", "f4"), 2.0,
                        (0.0, 0.1, 0.2, 0.3), (1.0, 1.0, 2.0, 2.0))
    directory = tmp_path / "model"
    save_model(model, card, directory)
    return directory, model


def test_round_trip_restores_weights_and_card(saved: tuple[Path, torch.nn.Module]) -> None:
    directory, original = saved
    spec = json.loads((directory / SPEC).read_text())
    assert spec["weights_sha256"] == sha256_file(directory / WEIGHTS)
    for path in (directory, directory / SPEC, directory / WEIGHTS):
        model, card = load_model(path)
        assert card.classes == ("a", "b", "c") and card.std == (1.0, 1.0, 2.0, 2.0)
        x = torch.randn(5, 4)
        assert torch.equal(model(x), original.eval()(x))
        assert not model.training


def test_a_flipped_byte_in_the_tensor_data_is_caught(saved: tuple[Path, torch.nn.Module]) -> None:
    directory, _ = saved
    weights = directory / WEIGHTS
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0xFF  # still parses as safetensors: only the recorded hash can tell
    weights.write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"corrupted or replaced: its sha256 differs"):
        load_model(directory)


def test_a_truncated_file_without_a_recorded_hash_is_reported(
        saved: tuple[Path, torch.nn.Module]) -> None:
    directory, _ = saved
    spec = json.loads((directory / SPEC).read_text())
    del spec["weights_sha256"]  # an older model.json
    (directory / SPEC).write_text(json.dumps(spec))
    weights = directory / WEIGHTS
    weights.write_bytes(weights.read_bytes()[:40])
    with pytest.raises(InputError, match=r"corrupted or not a safetensors file"):
        load_model(directory)


def test_weights_of_another_architecture_do_not_fit(saved: tuple[Path, torch.nn.Module]) -> None:
    directory, _ = saved
    spec = json.loads((directory / SPEC).read_text())
    spec["spec"]["params"] = {"hidden": [16]}
    (directory / SPEC).write_text(json.dumps(spec))
    with pytest.raises(InputError, match=r"weights do not fit the model"):
        load_model(directory)


def _pickles(tmp_path: Path, model: torch.nn.Module) -> dict[str, Path]:
    paths = {
        "state_dict.pt": tmp_path / "state_dict.pt",
        "full_model.pth": tmp_path / "full_model.pth",
        "legacy.bin": tmp_path / "legacy.bin",
    }
    torch.save(model.state_dict(), paths["state_dict.pt"])
    torch.save(model, paths["full_model.pth"])
    torch.save(model.state_dict(), paths["legacy.bin"], _use_new_zipfile_serialization=False)
    plain = tmp_path / "plain.data"
    plain.write_bytes(pickle.dumps({"w": [1, 2, 3]}))
    paths["plain.data"] = plain
    return paths


def test_pickle_checkpoints_are_refused_with_an_explanation(
        tmp_path: Path, saved: tuple[Path, torch.nn.Module]) -> None:
    _, model = saved
    for name, path in _pickles(tmp_path, model).items():
        assert looks_like_pickle(path), name
        with pytest.raises(InputError, match=r"refusing a pickle-based checkpoint.*can execute "
                                             r"code.*weights_only=True.*safetensors.*ONNX"):
            load_model(path)


def test_a_pickle_renamed_to_safetensors_is_refused_as_a_pickle(
        saved: tuple[Path, torch.nn.Module]) -> None:
    directory, model = saved
    torch.save(model.state_dict(), directory / WEIGHTS)
    with pytest.raises(InputError, match="refusing a pickle-based checkpoint"):
        load_model(directory)


def test_a_directory_holding_only_a_pickle_is_refused(tmp_path: Path,
                                                      saved: tuple[Path, torch.nn.Module]) -> None:
    _, model = saved
    only = tmp_path / "checkpoint"
    only.mkdir()
    torch.save(model.state_dict(), only / "model.pt")
    with pytest.raises(InputError, match=r"model.pt: refusing a pickle-based checkpoint"):
        load_model(only)
    (only / "model.pt").unlink()
    with pytest.raises(InputError, match=r"no model.json"):
        load_model(only)


def test_safetensors_files_do_not_look_like_pickles(saved: tuple[Path, torch.nn.Module]) -> None:
    directory, _ = saved
    assert not looks_like_pickle(directory / WEIGHTS)
    assert not looks_like_pickle(directory / SPEC)
    assert not looks_like_pickle(directory / "missing")


def test_a_missing_model_is_reported(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"model not found"):
        load_model(tmp_path / "nope")
