"""Request parsing and row decoding: every malformed body becomes a RequestError with the
right status."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ci_ml.serve.decoders.interface import Batch, InputDecoder
from ci_ml.serve.model import ServedModel
from ci_ml.serve.validation import RequestError, parse_json, parse_rows


@pytest.fixture
def signature(tiny_model: Path) -> InputDecoder:
    return ServedModel(tiny_model).decoder


def parse_inputs(doc: object, decoder: InputDecoder, max_batch: int) -> Batch:
    return decoder.decode_rows(parse_rows(doc, max_batch))


def test_flat_and_nested_samples(signature: InputDecoder) -> None:
    doc = parse_json(b'{"inputs": [[1, 2, 3, 4], [[[5.5, 6], [7, 8]]]]}')
    batch = parse_inputs(doc, signature, max_batch=8)
    # The tiny model's card scales by 2: the feed is the raw values / 2, in the graph's shape.
    np.testing.assert_array_equal(batch.feed["input"].reshape(2, 4),
                                  np.array([[1, 2, 3, 4], [5.5, 6, 7, 8]]) / 2)
    assert batch.size == 2 and batch.rows == doc["inputs"]


@pytest.mark.parametrize("body, status, message", [
    (b'{"inputs": [', 400, "malformed JSON"),
    (b"\xff\xfe", 400, "not UTF-8"),
    (b"[" * 100_000 + b"]" * 100_000, 400, "nested too deeply"),
    (b'{"inputs": [[NaN, 1, 2, 3]]}', 422, "non-finite number NaN"),
    (b'{"inputs": [[Infinity, 1, 2, 3]]}', 422, "non-finite"),
    (b'{"inputs": [[1e999, 1, 2, 3]]}', 422, "non-finite value"),
    (b'{"inputs": [[1e300, 1, 2, 3]]}', 422, "beyond"),
    (b'{"inputs": [[' + b"9" * 5000 + b', 1, 2, 3]]}', 400, "malformed JSON"),
    (b"[]", 422, "must be a JSON object"),
    (b"{}", 422, "missing key 'inputs'"),
    (b'{"inputs": [[1,2,3,4]], "x": 1}', 422, "unknown key"),
    (b'{"inputs": "x"}', 422, "must be a list"),
    (b'{"inputs": []}', 422, "is empty"),
    (b'{"inputs": [[1, 2, 3]]}', 422, "expected 4 values"),
    (b'{"inputs": [[1, 2, 3, "4"]]}', 422, r"inputs\[0\]\[3\]: expected a number, got a string"),
    (b'{"inputs": [[1, 2, 3, true]]}', 422, "got a boolean"),
    (b'{"inputs": [[1, 2, 3, null]]}', 422, "got null"),
    (b'{"inputs": [[[[1, 2], [3]]]]}', 422, "expected 2 values, got 1"),
    (b'{"inputs": [[1,2,3,4],[1,2,3,4],[1,2,3,4],[1,2,3,4],[1,2,3,4],[1,2,3,4],[1,2,3,4],'
     b'[1,2,3,4],[1,2,3,4]]}', 413, "batch of 9 samples exceeds the limit of 8"),
])
def test_rejections(signature, body: bytes, status: int, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(RequestError, match=message) as err:
        parse_inputs(parse_json(body), signature, max_batch=8)
    assert err.value.status == status


def test_messages_do_not_echo_input(signature) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(RequestError) as err:
        parse_inputs(parse_json(b'{"inputs": [[1,2,3,4]], "<script>alert(1)</script>": 1}'),
                     signature, max_batch=8)
    assert "script" not in err.value.message
