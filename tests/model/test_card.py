"""The model card: ci-ml/2 round trip, ci-ml/1 still read, bad cards refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ci_ml.data.features import CATEGORY, NUMBER, InvalidValue, fit_preprocessor
from ci_ml.errors import InputError
from ci_ml.model.card import Field, InputBinding, ModelCard, OutputBinding, read_card


def _card() -> ModelCard:
    columns = {"island": np.array(["Biscoe", "Dream", None, "Biscoe"], dtype=object),
               "mass": np.array(["3750", "NA", "4400", "3800"], dtype=object)}
    prep = fit_preprocessor(columns, [("island", CATEGORY), ("mass", NUMBER)], standardize=True)
    return ModelCard(task="classification", classes=("Adelie", "Gentoo"),
                     fields=(Field("island", CATEGORY, True, ("Biscoe", "Dream")),
                             Field("mass", NUMBER, True, (), 3750.0, 4400.0)),
                     inputs=(InputBinding("input", "float32", ("island", "mass"), True, (3,)),),
                     outputs=OutputBinding("logits", "logits"), preprocessing=prep,
                     target="species")


def test_round_trip_and_the_encoder_counts_what_it_meets(tmp_path: Path) -> None:
    card = _card()
    (tmp_path / "model.json").write_text(json.dumps(card.to_json()))
    again = read_card(tmp_path)
    assert again == card
    assert again.preprocessing is not None
    x, report = again.preprocessing.transform(
        {"island": ["Torgersen", None, "Dream"], "mass": [None, "4000", 3800]}, 3)
    assert x.shape == (3, 3)
    assert x[0, :2].tolist() == [0.0, 0.0] and x[2, :2].tolist() == [0.0, 1.0]
    assert report.unseen == {"island": {"Torgersen": 1}}
    assert report.missing == {"island": 1, "mass": 1}
    # The median of the training values (3800) fills a missing number.
    assert x[0, 2] == x[2, 2]
    with pytest.raises(InvalidValue, match="row 1, field 'mass'"):
        again.preprocessing.transform({"island": ["Dream", "Dream"], "mass": [1, "heavy"]}, 2,
                                      strict=True)


def test_a_v1_card_still_reads(tmp_path: Path) -> None:
    (tmp_path / "model.json").write_text(json.dumps({
        "format": "ci-ml/1", "classes": ["0", "1"], "scale": 16.0,
        "features": ["a", "b"], "mean": [0.5, 0.25], "std": [2.0, 1.0],
        "spec": {"name": "mlp", "input_shape": [2], "num_classes": 2, "params": {}}}))
    card = read_card(tmp_path)
    assert card.task == "classification" and card.features == ("a", "b")
    assert card.preprocessing is not None
    x, _ = card.preprocessing.transform({"a": [16.0], "b": [0.0]}, 1)
    assert x.tolist() == [[0.25, -0.25]]   # (16/16 - 0.5) / 2, (0/16 - 0.25) / 1


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d.update(task="ranking"), "task 'ranking' is not classification or regression"),
    (lambda d: d.update(classes=["only"]), "needs at least two classes"),
    (lambda d: d["inputs"][0].update(fields=["island", "wings"]), "uses field 'wings'"),
    (lambda d: d["inputs"][0].update(shape=[4]), "has shape [4], but the preprocessing makes 3"),
    (lambda d: d["preprocessing"]["fields"][1].update(std=0), "std must be a positive number"),
    (lambda d: d.update(format="ci-ml/9"), "unknown card format 'ci-ml/9'"),
    (lambda d: d["outputs"].update(kind="votes"), "outputs.kind 'votes'"),
])
def test_bad_cards_are_refused(tmp_path: Path, change, message: str) -> None:  # type: ignore[no-untyped-def]
    doc = _card().to_json()
    change(doc)
    (tmp_path / "model.json").write_text(json.dumps(doc))
    with pytest.raises(InputError, match="not a valid model card") as info:
        read_card(tmp_path)
    assert message in str(info.value)
