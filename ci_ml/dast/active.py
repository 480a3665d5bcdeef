"""Active probes built from the model's input signature, and how their answers are judged.

A probe is one request that a robust model endpoint must handle: rejected with a
4xx (malformed JSON, wrong dtype or shape, NaN/Infinity, oversized batch or body),
or at least answered without a 5xx, a leaked trace, a hang or a crash.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from ci_ml.dast.interface import InputSpec

# Payloads stay on the target: the JNDI probe points at a closed loopback port.
INJECTIONS: tuple[tuple[str, str], ...] = (
    ("sql", "' OR '1'='1' --"),
    ("command", ";cat /etc/passwd"),
    ("command", "$(cat /etc/passwd)"),
    ("xss", "<script>alert(1)</script>"),
    ("template", "{{7*7}}${7*7}"),
    ("traversal", "../../../../../../etc/passwd"),
    ("jndi", "${jndi:ldap://127.0.0.1:1/a}"),
    ("python", "__import__('os').system('id')"),
)
TRAVERSAL_PATHS = (
    "/../../../../../../etc/passwd",
    "/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/..%2f..%2f..%2f..%2f..%2f..%2fetc%2fpasswd",
    "/static/../../../../../../etc/passwd",
    "/openapi.json/../../../../../../etc/passwd",
    "/....//....//....//....//etc/passwd",
)
PASSWD = re.compile(r"root:[x*]?:0:0:")
SQL_ERRORS = re.compile(r"(SQL syntax|SQLSTATE\[|sqlite3\.OperationalError|ORA-\d{5}|"
                        r"unterminated quoted string|psycopg2\.errors)", re.I)
TRACE_MARKER = "ci-ml-dast-trace-7f3a"
UNKNOWN_BATCH = 10_000             # tried when the target declares no batch limit
UNKNOWN_BODY = 16 * 1024 * 1024    # tried when the target declares no body limit


@dataclass(frozen=True)
class Probe:
    kind: str                       # groups probes into one finding per kind
    attack: str                     # what was sent, for the finding (short)
    method: str
    path: str
    body: bytes | None = None
    headers: tuple[tuple[str, str], ...] = (("Content-Type", "application/json"),)
    accept_rule: str | None = None  # plugin raised when the server answers 2xx
    detect: str | None = None       # look for evidence of: sql, command, traversal, xss
    headers_extra: dict[str, str] = field(default_factory=dict)

    def header_dict(self) -> dict[str, str]:
        return {**dict(self.headers), **self.headers_extra}


def _j(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _nest(flat: list[Any], shape: tuple[int, ...]) -> Any:
    if len(shape) <= 1:
        return flat
    step = len(flat) // shape[0]
    return [_nest(flat[i * step:(i + 1) * step], shape[1:]) for i in range(shape[0])]


def valid_sample(spec: InputSpec) -> list[float]:
    if spec.example and len(spec.example) == spec.n_features:
        return [float(v) for v in spec.example]
    return [0.0] * max(spec.n_features, 1)


def baseline_request(spec: InputSpec) -> tuple[str, str, bytes, dict[str, str]]:
    """One valid prediction request: normal traffic for the passive checks."""
    return ("POST", spec.predict_path, _j({"inputs": [valid_sample(spec)]}),
            {"Content-Type": "application/json"})


def build_probes(spec: InputSpec | None) -> list[Probe]:
    """The probes, least destructive first: traversal, methods, then body tampering,
    then size limits, then non-finite numbers (the classic crash of a model server)."""
    probes: list[Probe] = [Probe("traversal", p, "GET", p, headers=(), detect="traversal")
                           for p in TRAVERSAL_PATHS]
    probes.append(Probe("method", "TRACE /", "TRACE", "/", headers=(),
                        headers_extra={"X-Ci-Ml-Trace": TRACE_MARKER}, detect="trace"))
    probes.append(Probe("not-found", "GET unknown path", "GET", "/ci-ml-dast-no-such-path",
                        headers=()))
    for family, payload in INJECTIONS[:4]:
        probes.append(Probe("query-injection", f"query {family}: {payload}", "GET",
                            f"/?q={quote(payload)}", headers=(), detect=family))
    path = spec.predict_path if spec else "/predict"
    probes.append(Probe("method", f"PUT {path}", "PUT", path, body=b"{}"))
    probes.append(Probe("method", f"DELETE {path}", "DELETE", path))
    if spec is None or spec.n_features < 1:
        # No signature known: generic tampering of the conventional endpoint only.
        for raw in (b'{"inputs": [', b"not json", b"", b"[]", b"null"):
            probes.append(Probe("malformed-json", repr(raw[:30]), "POST", path, raw))
        return probes

    n = spec.n_features
    good = valid_sample(spec)
    post = lambda kind, attack, body, rule=None, detect=None: probes.append(  # noqa: E731
        Probe(kind, attack, "POST", path, body, accept_rule=rule, detect=detect))

    probes.append(Probe("content-type", "valid body as text/plain", "POST", path,
                        _j({"inputs": [good]}), headers=(("Content-Type", "text/plain"),)))
    for raw in (b'{"inputs": [', b"not json", b"", b'{"inputs": [[1,2,]]}', b"\xff\xfe\x00{",
                b'{"inputs": "' + b"A" * 5000 + b'"}'):
        post("malformed-json", f"malformed: {raw[:24]!r}", raw, "190004")
    deep = 100_000
    post("malformed-json", f"{deep} nested arrays", b'{"inputs":' + b"[" * deep + b"]" * deep
         + b"}", "190004")
    for doc, attack in ((None, "null body"), ([], "top-level list"), ({}, "no 'inputs'"),
                        ({"inputs": "x"}, "inputs is a string"), ({"inputs": {}}, "inputs is "
                        "an object"), ({"inputs": []}, "empty batch")):
        post("malformed-json", attack, _j(doc), "190004")
    for bad, attack in (("a", "a string value"), (None, "a null value"), (True, "a boolean value"),
                        ({}, "an object value"), ([1.0], "a list value")):
        sample: list[Any] = list(good)
        sample[0] = bad
        post("dtype", attack, _j({"inputs": [sample]}), "190004")
    post("dtype", "all values as strings", _j({"inputs": [[str(v) for v in good]]}), "190004")
    shapes: tuple[tuple[list[Any], str], ...] = (
        (good[:-1], f"{n - 1} values"), (good + [0.0], f"{n + 1} values"), ([], "empty sample"),
        (good * 2, f"{2 * n} values"), ([good], "extra nesting"))
    for wrong, attack in shapes:
        post("shape", attack, _j({"inputs": [wrong]}), "190004")
    if len(spec.sample_shape) > 1:
        nested = _nest(good, spec.sample_shape)
        ragged = json.loads(json.dumps(nested))
        inner = ragged
        while isinstance(inner[0], list) and isinstance(inner[0][0], list):
            inner = inner[0]
        inner[0] = inner[0][:-1]
        post("shape", "ragged nested sample", _j({"inputs": [ragged]}), "190004")
    for family, payload in INJECTIONS:
        sample = list(good)
        sample[0] = payload
        post("injection", f"{family}: {payload}", _j({"inputs": [sample]}), None, family)
    post("injection", "script tag as a key",
         _j({"inputs": [good], "<script>alert(1)</script>": 1}), None, "xss")
    post("range", "1e308 (overflows float32)", _j({"inputs": [[1e308] * n]}))
    post("range", "-1e308", _j({"inputs": [[-1e308] * n]}))
    post("range", "huge integer", b'{"inputs": [[' + b"9" * 5000 + b"]]}")
    batch = (spec.max_batch + 1) if spec.max_batch else UNKNOWN_BATCH
    post("batch-limit", f"batch of {batch} samples", _j({"inputs": [good] * batch}), "190005")
    size = (spec.max_body_bytes + 1) if spec.max_body_bytes else UNKNOWN_BODY
    pad = max(0, size - len(_j({"inputs": [good]})))
    post("body-limit", f"body of {size} bytes", b'{"inputs": [' + _j(good) + b"]" + b" " * pad
         + b"}", "190005")
    text = _j({"inputs": [good]}).decode()
    first = json.dumps(good[0])
    for literal in ("NaN", "Infinity", "-Infinity", "1e999"):
        body = text.replace(first, literal, 1).encode()
        post("non-finite", f"{literal} as a value", body, "190003")
    post("non-finite", "all NaN", ('{"inputs": [[' + ",".join(["NaN"] * n) + "]]}").encode(),
         "190003")
    return probes


def detect_evidence(detect: str | None, body: str, html: bool) -> tuple[str, str] | None:
    """(plugin id, evidence) when the answer shows the injection worked."""
    if not detect or not body:
        return None
    match = PASSWD.search(body)
    if match and detect in ("traversal", "command"):
        return ("6" if detect == "traversal" else "90020", match.group(0))
    if detect == "sql":
        sql = SQL_ERRORS.search(body)
        if sql:
            return ("40018", sql.group(0))
    if detect == "xss" and html and "<script>alert(1)</script>" in body:
        return ("40012", "<script>alert(1)</script>")
    if detect == "trace" and TRACE_MARKER in body:
        return ("90028", TRACE_MARKER)
    return None
