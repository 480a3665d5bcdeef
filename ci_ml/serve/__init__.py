"""The model server: ONNX Runtime behind a hardened HTTP API (uvicorn on llhttp).

``/predict`` (rows of raw values), the Open Inference Protocol under ``/v2``, Prometheus
metrics at ``/metrics``. Nothing in this package imports torch, yaml, jsonschema or the
config loader: the container image ships only ``ci_ml/__init__.py``, ``ci_ml/errors.py``
and this package, plus onnxruntime, numpy, uvicorn (with click and h11, its own
dependencies), httptools, uvloop and prometheus-client.
"""
