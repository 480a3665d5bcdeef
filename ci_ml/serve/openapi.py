"""The OpenAPI 3 document of a served model, generated from its decoder and settings.

The document states exactly what the server accepts: the row schema with its value
bounds, the batch limit, the required fields. A request valid against it is answered
200 (a schema-driven fuzzer checks this in the tests). The Open Inference Protocol's
``infer`` endpoint is described by that protocol, not here: its tensor shapes and data
lengths cannot be tied together in JSON Schema. ``x-ci-ml`` carries the signature in
plain form for the DAST engine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ci_ml.serve.model import ServedModel
    from ci_ml.serve.settings import ServeSettings

OPENAPI_VERSION = "3.0.3"
OIP_SPEC = "https://kserve.github.io/website/latest/modelserving/data_plane/v2_protocol/"


def _error(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _response_schema(model: ServedModel) -> dict[str, Any]:
    props: dict[str, Any] = {"id": {"type": "string"}}
    if model.card.task == "classification":
        n = len(model.card.classes)
        props["predictions"] = {"type": "array",
                                "items": {"type": "string", "enum": list(model.card.classes)}}
        props["probabilities"] = {"type": "array", "items": {
            "type": "array", "minItems": n, "maxItems": n, "items": {"type": "number"}}}
        required = ["id", "predictions", "probabilities"]
    else:
        width = model.output_specs()[0].shape
        item: dict[str, Any] = {"type": "number"}
        if len(width) == 2:
            item = {"type": "array", "minItems": width[1], "maxItems": width[1], "items": item}
        props["predictions"] = {"type": "array", "items": item}
        required = ["id", "predictions"]
    return {"type": "object", "required": required, "properties": props}


def build_openapi(model: ServedModel, settings: ServeSettings, name: str,
                  title: str) -> dict[str, Any]:
    limits = settings.limits
    decoder = model.decoder
    ok_status = {"type": "object", "properties": {"status": {"type": "string"}}}
    oip_ready = {"type": "object", "properties": {"ready": {"type": "boolean"}}}
    name_param = {"name": "name", "in": "path", "required": True,
                  "schema": {"type": "string", "enum": [name]}}
    predict_errors = {
        "400": _error("Malformed JSON"),
        "411": _error("No Content-Length and not chunked"),
        "413": _error(f"Body over {limits.max_body_bytes} bytes or batch over "
                      f"{limits.max_batch} samples"),
        "415": _error("Content-Type is not application/json"),
        "422": _error("A value of the wrong type, shape or range (the schema's bounds)"),
        "503": _error("Shutting down"),
    }

    def get(op: str, summary: str, schema: dict[str, Any], extra: dict[str, Any] | None = None,
            parameters: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"operationId": op, "summary": summary,
                                "responses": {"200": _json(schema, summary), **(extra or {})}}
        if parameters:
            body["parameters"] = parameters
        return {"get": body}

    tensor = {"type": "object", "properties": {"name": {"type": "string"},
                                               "datatype": {"type": "string"},
                                               "shape": {"type": "array",
                                                         "items": {"type": "integer"}}}}
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": title,
            "version": model.sha256[:12],
            "description": "Predictions from an ONNX model, at /predict (rows of raw values) and "
                           "through the Open Inference Protocol (KServe v2) at "
                           f"/v2/models/{name}/infer ({OIP_SPEC}). Prometheus metrics at "
                           "/metrics.",
        },
        "paths": {
            "/predict": {"post": {
                "operationId": "predict",
                "summary": "Predictions for a batch of rows",
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/PredictRequest"},
                    "example": {"inputs": [decoder.example_row()]}}}},
                "responses": {
                    "200": _json({"$ref": "#/components/schemas/PredictResponse"},
                                 "One prediction per row, and the request id"),
                    **predict_errors,
                },
            }},
            "/health": get("health", "Liveness", ok_status),
            "/ready": get("ready", "Readiness", ok_status, {"503": _error("Draining")}),
            "/openapi.json": get("openapi", "This document", {"type": "object"}),
            "/v2/health/live": get("oipLive", "Liveness (Open Inference Protocol)",
                                   {"type": "object", "properties": {
                                       "live": {"type": "boolean"}}}),
            "/v2/health/ready": get("oipReady", "Readiness (Open Inference Protocol)",
                                    oip_ready, {"503": _error("Draining")}),
            "/v2": get("oipServerMetadata", "Server metadata (Open Inference Protocol)",
                       {"type": "object", "required": ["name", "version", "extensions"]}),
            "/v2/models/{name}": get(
                "oipModelMetadata", "Model metadata: input and output tensors",
                {"type": "object", "required": ["name", "platform", "inputs", "outputs"],
                 "properties": {"name": {"type": "string"},
                                "inputs": {"type": "array", "items": tensor},
                                "outputs": {"type": "array", "items": tensor}}},
                {"404": _error("No such model")}, parameters=[name_param]),
            "/v2/models/{name}/ready": get("oipModelReady", "Model readiness", oip_ready,
                                           {"404": _error("No such model"),
                                            "503": _error("Draining")}, [name_param]),
        },
        "components": {"schemas": {
            "PredictRequest": {
                "type": "object", "required": ["inputs"], "additionalProperties": False,
                "properties": {"inputs": {"type": "array", "minItems": 1,
                                          "maxItems": limits.max_batch,
                                          "items": decoder.row_schema()}},
            },
            "PredictResponse": _response_schema(model),
            "Error": {"type": "object", "required": ["error"],
                      "properties": {"error": {"type": "string"},
                                     "request_id": {"type": "string"}}},
        }},
        "x-ci-ml": {
            "signature": {**decoder.describe(), "task": model.card.task,
                          "classes": list(model.card.classes),
                          "sample_shape": list(decoder.protocol_inputs()[0].sample_shape)},
            "limits": {"max_batch": limits.max_batch, "max_body_bytes": limits.max_body_bytes},
            "predict_path": "/predict",
            "health_path": "/health",
            "oip_model": name,
        },
    }
