"""The monitored model as monitoring needs it: identity, features, classes, predictions.

One adapter over the served model (``ci_ml.serve.model``), so that monitoring does
not depend on the server's internals: the digest the server logs, the feature
order of positional inputs, and predictions on reference rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ci_ml.monitor.interface import MonitorInputError, Task


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
        self.task = Task(card.task)
        width = math.prod(self._served.inputs[0].sample_shape) if self._served.inputs else 0
        self.features = tuple(str(f) for f in card.doc.get("features") or ()) or tuple(
            f"f{i}" for i in range(width))
        self.directory = self._served.path.parent

    def predict(self, rows: list[Any]) -> list[str] | list[float] | None:
        """Predicted labels (or values) for raw rows, decoded as the server decodes a request;
        None when the server would refuse them (the caller then uses another reference)."""
        from ci_ml.serve.decoders.interface import RequestError

        out: list[Any] = []
        for start in range(0, len(rows), 256):
            try:
                batch = self._served.decoder.decode_rows(rows[start:start + 256])
            except RequestError:
                return None
            result = self._served.predict(batch)
            if result.labels is not None:
                out.extend(result.labels)
            elif result.values is not None:
                out.extend(float(v) for v in result.values.reshape(len(batch.rows), -1)[:, 0])
        return out
