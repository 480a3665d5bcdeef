"""Finding out what a target takes: its OpenAPI document, or the ONNX model itself.

ci-ml's own server publishes the signature under ``x-ci-ml``; for any other server
the prediction operation is found as a POST taking ``{"inputs": [...]}`` and its
sample shape is read from nested ``minItems``/``maxItems``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ci_ml.dast.http import Client
from ci_ml.dast.interface import DastError, DastTarget, InputSpec

OPENAPI_PATHS = ("/openapi.json", "/swagger.json", "/v3/api-docs")


def _deref(node: Any, doc: Mapping[str, Any], depth: int = 0) -> Any:
    if isinstance(node, Mapping) and "$ref" in node and depth < 20:
        ref = str(node["$ref"])
        if not ref.startswith("#/"):
            return {}
        target: Any = doc
        for part in ref[2:].split("/"):
            target = target.get(part, {}) if isinstance(target, Mapping) else {}
        return _deref(target, doc, depth + 1)
    return node


def _shape_of(schema: Any, doc: Mapping[str, Any]) -> tuple[int, ...] | None:
    """Nested fixed-length arrays of numbers -> their shape."""
    schema = _deref(schema, doc)
    if not isinstance(schema, Mapping):
        return None
    for key in ("oneOf", "anyOf"):
        if key in schema:
            shapes = [s for s in (_shape_of(o, doc) for o in schema[key]) if s]
            return max(shapes, key=len) if shapes else None
    if schema.get("type") in ("number", "integer"):
        return ()
    if schema.get("type") == "array":
        inner = _shape_of(schema.get("items", {}), doc)
        n = schema.get("minItems")
        if inner is None or not isinstance(n, int) or schema.get("maxItems") != n:
            return None
        return (n, *inner)
    return None


def spec_from_openapi(doc: Mapping[str, Any]) -> InputSpec | None:
    ext = doc.get("x-ci-ml")
    if isinstance(ext, Mapping) and isinstance(ext.get("signature"), Mapping):
        sig, limits = ext["signature"], ext.get("limits") or {}
        try:
            return InputSpec(predict_path=str(ext.get("predict_path", "/predict")),
                             sample_shape=tuple(int(d) for d in sig["sample_shape"]),
                             max_batch=limits.get("max_batch"),
                             max_body_bytes=limits.get("max_body_bytes"))
        except (KeyError, TypeError, ValueError):
            pass
    for path, item in (doc.get("paths") or {}).items():
        post = item.get("post") if isinstance(item, Mapping) else None
        if not isinstance(post, Mapping):
            continue
        content = (_deref(post.get("requestBody", {}), doc).get("content") or {})
        media = content.get("application/json") or {}
        body = _deref(media.get("schema", {}), doc)
        inputs = _deref((body.get("properties") or {}).get("inputs", {}), doc)
        if not isinstance(inputs, Mapping) or inputs.get("type") != "array":
            continue
        shape = _shape_of(inputs.get("items", {}), doc)
        max_batch = inputs.get("maxItems")
        return InputSpec(predict_path=str(path), sample_shape=shape or (),
                         max_batch=max_batch if isinstance(max_batch, int) else None)
    return None


def spec_from_model(path: Path) -> InputSpec:
    from ci_ml.serve.model import ServedModel

    model = ServedModel(path)
    row = model.decoder.example_row()
    example = tuple(float(v) for v in row) if isinstance(row, list) and all(
        isinstance(v, int | float) for v in row) else ()
    return InputSpec(sample_shape=model.decoder.protocol_inputs()[0].sample_shape,
                     example=example)


def get_paths(doc: Mapping[str, Any] | None) -> tuple[str, ...]:
    paths = ["/"]
    for path, item in ((doc or {}).get("paths") or {}).items():
        if isinstance(item, Mapping) and "get" in item and "{" not in str(path):
            paths.append(str(path))
    return tuple(dict.fromkeys(paths))


def discover(client: Client, model: Path | None = None) -> DastTarget:
    """Reach the target and learn its API; raises DastError if it does not answer."""
    first = client.send("GET", "/")
    if not first.answered:
        raise DastError(f"target {client.base_url} did not answer ({first.error}); "
                        "the DAST scan did not run")
    doc: dict[str, Any] | None = None
    doc_url = None
    for candidate in OPENAPI_PATHS:
        ex = client.send("GET", candidate)
        if ex.status == 200:
            try:
                parsed = json.loads(ex.body)
            except ValueError:
                continue
            if isinstance(parsed, dict) and ("openapi" in parsed or "swagger" in parsed):
                doc, doc_url = parsed, client.url(candidate)
                break
    spec = spec_from_openapi(doc) if doc else None
    if model is not None:
        from_model = spec_from_model(model)
        spec = InputSpec(predict_path=spec.predict_path if spec else "/predict",
                         sample_shape=from_model.sample_shape,
                         max_batch=spec.max_batch if spec else None,
                         max_body_bytes=spec.max_body_bytes if spec else None,
                         example=from_model.example)
    return DastTarget(url=client.base_url, spec=spec, openapi=doc, openapi_url=doc_url,
                      paths=get_paths(doc))
