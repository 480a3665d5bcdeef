"""The monitored model as monitoring needs it: identity, features, classes, predictions.

One adapter over the served model (``ci_ml.serve.model``), so that monitoring does
not depend on the server's internals: the digest the server logs, the feature
order of positional inputs, and predictions on reference rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ci_ml.monitor.interface import MonitorInputError, Task
from ci_ml.monitor.sketch import number_or_nan


@dataclass(frozen=True)
class ModelIdentity:
    digest: str                   # sha256 hex of the model files and card, as the server logs it
    version: str | None
    path: Path

    def matches(self, digest: Any, version: Any) -> bool:
        """Whether a log line's model fields name this model.

        Digests match when one is a prefix of the other (at least 12 hex digits: older
        logs carry a prefix); a version, when both sides have one, must be equal too.
        """
        if not isinstance(digest, str) or len(digest) < 12:
            return False
        d = digest.lower().removeprefix("sha256:")
        if not (self.digest.startswith(d) or d.startswith(self.digest)):
            return False
        return version is None or self.version is None or str(version) == self.version


class MonitoredModel:
    """An exported ci-ml model (ONNX + model.json) opened for monitoring."""

    def __init__(self, path: Path, version: str | None = None) -> None:
        from ci_ml.errors import InputError
        from ci_ml.serve.model import ServedModel

        try:
            self._served = ServedModel(path)
        except InputError as exc:
            raise MonitorInputError(f"monitored model: {exc.message}") from exc
        self.identity = ModelIdentity(self._served.sha256, version, self._served.path)
        card = self._served.card
        self.classes = tuple(card.classes)
        self.features = tuple(card.features) or tuple(
            f"f{i}" for i in range(self._served.signature.n_features))
        self.task = Task.CLASSIFICATION
        self.directory = self._served.path.parent

    def predict_labels(self, rows: list[list[Any]]) -> list[str] | None:
        """Predicted labels for raw rows in feature order; None when the rows are not all
        numbers this model can take (then the caller falls back to another reference)."""
        values = []
        for row in rows:
            parsed = [number_or_nan(v) for v in row]
            if not all(ok for _, ok in parsed):
                return None
            values.append([v for v, _ in parsed])
        if not values:
            return []
        x = np.nan_to_num(np.asarray(values, dtype=np.float64))
        labels: list[str] = []
        for start in range(0, len(x), 1024):
            labels.extend(self._served.predict(x[start:start + 1024])[0])
        return labels
