"""JSON on the request path: orjson's speed with the standard library's exact semantics.

Decoding and encoding a small prediction took the stdlib ``json`` module more CPU than
the model's inference (benchmarks/serve.py); orjson does both about ten times faster.
Where the two libraries disagree, the standard library's answer is the one served, so
what a request means and what comes back never depends on which path ran:

- orjson reads an integer past 64 bits as a float (``18446744073709551616`` becomes
  ``1.8446744073709552e+19``): a body holding a run of 19 or more digits goes to the
  standard library (such runs are rare: float repr has at most 17 significant digits);
- every body orjson refuses (``NaN``, a number that overflows to infinity, a lone
  surrogate, nesting deeper than 1024, a BOM, ...) is decoded again by the standard
  library, which accepts or refuses it with the message the API documents;
- orjson writes a non-finite float as ``null`` where ``allow_nan=False`` refuses it: an
  encoding that holds ``null`` anywhere is redone by the standard library, which raises
  on NaN and infinity as before (legitimate nulls only cost the slower path); integers
  past 64 bits and non-string keys, which orjson refuses, take the same path.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

_LONG_DIGITS = re.compile(rb"\d{19}")


def loads(body: bytes, stdlib: json.JSONDecoder) -> Any:
    """``stdlib.decode(body.decode("utf-8"))``, faster; raises exactly what that raises."""
    if not _LONG_DIGITS.search(body):
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            pass
    return stdlib.decode(body.decode("utf-8"))


def dumps(obj: Any) -> bytes:
    """Compact JSON, UTF-8; non-finite floats raise ``ValueError`` (``allow_nan=False``)."""
    try:
        out = orjson.dumps(obj)
    except TypeError:
        out = b"null"
    if b"null" not in out:
        return out
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode("utf-8")
