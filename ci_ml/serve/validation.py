"""Strict parsing of request bodies: JSON, then ``/predict``'s ``{"inputs": [...]}`` envelope.

Every way a request can be wrong becomes a ``RequestError`` with an HTTP status and
a message safe to send back (it names the position, never echoes long input). What a
row must hold is the model's decoder's business (``ci_ml.serve.decoders``).
"""

from __future__ import annotations

import json
from typing import Any

from ci_ml.serve import jsonio
from ci_ml.serve.decoders.interface import RequestError

__all__ = ["RequestError", "parse_json", "parse_rows"]


class _NonFinite(ValueError):
    pass


def _reject_constant(name: str) -> float:
    # json accepts NaN, Infinity and -Infinity by default; a model input must not.
    raise _NonFinite(name)


# One decoder for all requests: building one per call (what json.loads does when given a
# hook) costs more than decoding a batch-1 body. It decodes what orjson does not (jsonio).
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def _kind(value: Any) -> str:
    return {bool: "a boolean", str: "a string", dict: "an object", list: "a list",
            type(None): "null"}.get(type(value), type(value).__name__)


def parse_json(body: bytes) -> Any:
    try:
        return jsonio.loads(body, _DECODER)
    except UnicodeDecodeError as exc:
        raise RequestError(400, f"body is not UTF-8 (byte {exc.start})") from None
    except _NonFinite as exc:
        raise RequestError(422, f"non-finite number {exc} is not a valid input") from None
    except json.JSONDecodeError as exc:
        raise RequestError(400, f"malformed JSON: {exc.msg} (line {exc.lineno}, column "
                                f"{exc.colno})") from None
    except RecursionError:
        raise RequestError(400, "malformed JSON: nested too deeply") from None
    except ValueError as exc:  # e.g. an integer literal longer than Python's digit limit
        raise RequestError(400, f"malformed JSON: {str(exc)[:80]}") from None


def parse_rows(doc: Any, max_batch: int) -> list[Any]:
    """``/predict``'s body -> its rows (a non-empty list within the batch limit)."""
    if not isinstance(doc, dict):
        raise RequestError(422, f"body must be a JSON object with 'inputs', got {_kind(doc)}")
    extra = sorted(k for k in doc if k != "inputs")
    if extra:
        # The key itself is not echoed: a response never reflects request text.
        raise RequestError(422, f"{len(extra)} unknown key(s) (expected only 'inputs')")
    if "inputs" not in doc:
        raise RequestError(422, "missing key 'inputs'")
    inputs = doc["inputs"]
    if not isinstance(inputs, list):
        raise RequestError(422, f"'inputs' must be a list of samples, got {_kind(inputs)}")
    if not inputs:
        raise RequestError(422, "'inputs' is empty")
    if len(inputs) > max_batch:
        raise RequestError(413, f"batch of {len(inputs)} samples exceeds the limit of {max_batch}")
    return inputs
