"""The model server: ONNX Runtime behind a small, hardened HTTP JSON API.

Nothing in this package imports torch, click, yaml or jsonschema: the container
image ships only ``ci_ml/__init__.py``, ``ci_ml/errors.py`` and this package,
plus onnxruntime and numpy.
"""
