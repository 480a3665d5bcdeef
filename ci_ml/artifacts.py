"""Where the pipeline's model artifacts live under ``--out``: one place for every reader.

The *candidate* is the model the gate judges, the registry stores, ``serve`` and
``deploy`` ship: an ONNX graph (maybe with external data) and its card. Train writes
the trained model to ``TRAINED_DIR``; the model step that runs last (prune, which
exports even when it does not prune) writes the candidate to ``CANDIDATE_DIR``.
This module is torch-free so that serving, scanning and the gate can import it.
"""

from __future__ import annotations

TRAINED_DIR = "model"
CANDIDATE_DIR = "candidate"
CANDIDATE_ONNX = f"{CANDIDATE_DIR}/model.onnx"
CANDIDATE_ONNX_DATA = f"{CANDIDATE_DIR}/model.onnx.data"
CANDIDATE_CARD = f"{CANDIDATE_DIR}/model.json"
CANDIDATE_METRICS = f"{CANDIDATE_DIR}/metrics.json"
TRAINED_WEIGHTS = f"{TRAINED_DIR}/model.safetensors"
