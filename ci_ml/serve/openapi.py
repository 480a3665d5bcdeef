"""The OpenAPI 3 document of a served model, generated from its ONNX signature and model.json.

Besides the schemas, ``x-ci-ml`` carries the signature in plain form (sample shape,
dtype, classes, limits) so the DAST engine can build its payloads from it.
"""

from __future__ import annotations

from typing import Any

from ci_ml.serve.model import Signature
from ci_ml.serve.settings import Limits

OPENAPI_VERSION = "3.0.3"


def _nested(shape: tuple[int, ...]) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "number", "format": "double"}
    for dim in reversed(shape):
        schema = {"type": "array", "minItems": dim, "maxItems": dim, "items": schema}
    return schema


def _example(sig: Signature) -> list[Any]:
    if sig.row_schema is not None:
        props = sig.row_schema["oneOf"][0]["properties"]
        return [{name: p.get("example") for name, p in props.items()}]
    flat = [round(m * sig.scale, 4) for m in sig.mean] if sig.mean else [0.0] * sig.n_features
    return [flat]


def _error(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def build_openapi(sig: Signature, limits: Limits, model_sha256: str, title: str) -> dict[str, Any]:
    flat = {"type": "array", "minItems": sig.n_features, "maxItems": sig.n_features,
            "items": {"type": "number", "format": "double"},
            "description": "One sample as a flat list of raw feature values"
                           + (f" ({', '.join(sig.features[:4])}, ...)" if sig.features else "")}
    sample: dict[str, Any] = (flat if len(sig.sample_shape) == 1 else
                              {"oneOf": [_nested(sig.sample_shape), flat]})
    if sig.row_schema is not None:  # a tabular model: named fields, strings, null
        sample = sig.row_schema
    json_body = {"application/json": {"schema": {"$ref": "#/components/schemas/PredictRequest"},
                                      "example": {"inputs": _example(sig)}}}
    health = {"type": "object", "properties": {"status": {"type": "string"}}}
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": title,
            "version": model_sha256[:12],
            "description": "Predictions from an ONNX model. Inputs are raw feature values (the "
                           f"server divides by {sig.scale:g}"
                           + (" and standardizes" if sig.mean else "") + ").",
        },
        "paths": {
            "/predict": {"post": {
                "operationId": "predict",
                "summary": "Class predictions and probabilities for a batch of samples",
                "requestBody": {"required": True, "content": json_body},
                "responses": {
                    "200": {"description": "One label and one probability vector per sample",
                            "content": {"application/json": {
                                "schema": {"$ref": "#/components/schemas/PredictResponse"}}}},
                    "400": _error("Malformed JSON"),
                    "411": _error("No Content-Length"),
                    "413": _error(f"Body over {limits.max_body_bytes} bytes or batch over "
                                  f"{limits.max_batch} samples"),
                    "415": _error("Content-Type is not application/json"),
                    "422": _error("Wrong shape, type or a non-finite value"),
                    "503": _error("Not ready or shutting down"),
                },
            }},
            "/health": {"get": {"operationId": "health", "summary": "Liveness", "responses": {
                "200": {"description": "The process serves",
                        "content": {"application/json": {"schema": health}}}}}},
            "/ready": {"get": {"operationId": "ready", "summary": "Readiness",
                               "responses": {"200": {"description": "Ready for traffic",
                                             "content": {"application/json": {"schema": health}}},
                                             "503": _error("Draining")}}},
            "/openapi.json": {"get": {"operationId": "openapi", "summary": "This document",
                                      "responses": {"200": {"description": "OpenAPI 3 document"}}}},
        },
        "components": {"schemas": {
            "PredictRequest": {
                "type": "object", "required": ["inputs"], "additionalProperties": False,
                "properties": {"inputs": {"type": "array", "minItems": 1,
                                          "maxItems": limits.max_batch, "items": sample}},
            },
            "PredictResponse": {
                "type": "object",
                "required": ["predictions", "probabilities"] if sig.classes else ["predictions"],
                "properties": {
                    "predictions": {"type": "array",
                                    "items": ({"type": "string", "enum": list(sig.classes)}
                                              if sig.classes else {"type": "number"})},
                    "probabilities": {"type": "array", "items": {
                        "type": "array", "minItems": len(sig.classes),
                        "maxItems": len(sig.classes), "items": {"type": "number"}}},
                },
            },
            "Error": {"type": "object", "required": ["error"],
                      "properties": {"error": {"type": "string"},
                                     "request_id": {"type": "string"}}},
        }},
        "x-ci-ml": {
            "signature": sig.to_json(),
            "limits": {"max_batch": limits.max_batch, "max_body_bytes": limits.max_body_bytes},
            "predict_path": "/predict",
            "health_path": "/health",
        },
    }
