"""A served tabular model answers raw rows exactly as the in-process model does.

Two real models: ci-ml's MLP on the Palmer penguins (encoders in the card) and the
sklearn example's pipeline (a graph that takes raw named string and float inputs). The
rows are the test CSV's own, sent three ways: named fields with the file's text ("NA"
included), named fields with JSON numbers and null, and lists in field order.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from ci_ml.data.features import parse_number
from ci_ml.model.card import read_card
from ci_ml.model.inference import OnnxModel
from tests.conftest import REPO, CliResult
from tests.datasets.projects import Built, example_run, penguins  # noqa: F401 - fixtures

pytestmark = [pytest.mark.slow]


def _post(url: str, body: object) -> tuple[int, dict]:
    req = urllib.request.Request(url + "/predict", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310 - loopback
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _serve(project: Path) -> Iterator[str]:
    """`ci-ml serve --port 0` on the project's candidate; yields the URL."""
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    proc = subprocess.Popen([sys.executable, "-m", "ci_ml", "serve", "--port", "0", "-q"],
                            cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("serving "), (line, proc.stderr.read() if proc.stderr else "")
        yield line.split(" on ")[1].split()[0]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _rows(project: Path, card_fields: tuple[str, ...]) -> list[dict[str, str]]:
    """Every row of the project's split files, as the CSV text has them (both splits: the
    test split of the penguins happens to have no missing value)."""
    rows = []
    for data in sorted((project / "data").glob("*.csv")):
        if ".train." in data.name or ".test." in data.name or data.stem in ("train", "test"):
            with open(data, newline="") as fh:
                rows += [{f: row[f] for f in card_fields} for row in csv.DictReader(fh)]
    return rows


def _typed(row: dict[str, str], numbers: set[str]) -> dict[str, object]:
    out: dict[str, object] = {}
    for k, v in row.items():
        if v == "NA":
            out[k] = None
        elif k in numbers:
            out[k] = parse_number(v)
        else:
            out[k] = v
    return out


def _check(project: Path, url: str) -> None:
    candidate = project / "ci-ml-out" / "candidate"
    card = read_card(candidate)
    fields = card.features
    rows = _rows(project, fields)
    assert any("NA" in r.values() for r in rows)          # missing values are in the rows
    local = OnnxModel(candidate / "model.onnx", card)
    columns = {f: [r[f] for r in rows] for f in fields}
    expected = local.predict(columns, len(rows))
    numbers = {f.name for f in card.fields if f.kind == "number"}
    bodies = {
        "named text": [dict(r) for r in rows],
        "named json": [_typed(r, numbers) for r in rows],
        "lists": [[_typed(r, numbers)[f] for f in fields] for r in rows],
    }
    for how, inputs in bodies.items():
        answers: list[str] = []
        probs: list[list[float]] = []
        for start in range(0, len(inputs), 128):
            status, body = _post(url, {"inputs": inputs[start:start + 128]})
            assert status == 200, (how, body)
            answers += body["predictions"]
            probs += body["probabilities"]
        assert answers == list(expected.labels), how
        assert expected.probabilities is not None
        np.testing.assert_allclose(probs, np.round(expected.probabilities, 6), atol=1e-6,
                                   err_msg=how)
    # A category never seen in training is answered (and counted), a word in a number field
    # is a 422 that names the position without echoing the value.
    unseen = dict(rows[0])
    category = next(f.name for f in card.fields if f.kind == "category")
    unseen[category] = "Atlantis"
    status, body = _post(url, {"inputs": [unseen]})
    assert status == 200 and len(body["predictions"]) == 1
    number = next(f.name for f in card.fields if f.kind == "number")
    bad = dict(rows[0])
    bad[number] = "<script>alert(1)</script>"
    status, body = _post(url, {"inputs": [bad]})
    assert status == 422 and "script" not in body["error"]
    assert f"field {fields.index(number)}: expected a number" in body["error"]


def test_zoo_model_served_equals_in_process(penguins: Built) -> None:  # noqa: F811
    assert penguins.run.code == 0, penguins.run.output
    card = read_card(penguins.out / "candidate")
    # The in-process torch model, too: the card's encoders feed it the same numbers.
    import torch

    from ci_ml.model.persist import load_model

    model, _ = load_model(penguins.out / "model")
    rows = _rows(penguins.root, card.features)
    assert card.preprocessing is not None
    x, report = card.preprocessing.transform({f: [r[f] for r in rows] for f in card.features},
                                             len(rows))
    assert report.missing                                  # NA imputed, and counted
    with torch.no_grad():
        torch_labels = [card.classes[i] for i in model(torch.from_numpy(x)).argmax(1).tolist()]
    for url in _serve(penguins.root):
        _check(penguins.root, url)
        served: list[str] = []
        for start in range(0, len(rows), 128):
            status, body = _post(url, {"inputs": rows[start:start + 128]})
            assert status == 200
            served += body["predictions"]
        assert served == torch_labels


def test_team_model_served_equals_in_process(example_run: tuple[Path, CliResult]  # noqa: F811
                                             ) -> None:
    root, result = example_run
    assert result.code == 0, result.output
    for url in _serve(root):
        _check(root, url)
