"""The label-feedback route, ``POST /labels``: late labels of served requests, by request id.

Whoever learns the true outcome of a prediction posts it here, keyed by the request id
the server returned (and the row of a batched request); the rows are appended to the
labels file (``serve.labels.path``, JSON lines, the format ``ci-ml monitor --labels``
reads). Labels move the monitor's accuracy and can trigger retraining, so the route:

- is off unless ``serve.labels.path`` is set, and then needs a bearer token (from the
  environment variable ``serve.labels.token_env``; the server refuses to start without
  it), compared in constant time;
- takes a bounded JSON body (``max_body_bytes``) of at most ``max_rows`` rows, each an
  id of the form this server issues, a row within ``max_batch``, and a short string or
  finite number as the label; any bad row refuses the whole request (422, naming it);
- never decides what a label is worth: ``ci-ml monitor`` joins a label only to a logged
  request of the monitored model with that id, and counts the rest as unknown.
Several worker processes append to the file safely (the request log's locked appender).
"""

from __future__ import annotations

import hmac
import math
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ci_ml.errors import InputError
from ci_ml.serve.decoders.interface import RequestError
from ci_ml.serve.requestlog import RequestLog

# The ids ModelApp.next_request_id issues: a per-process hex prefix and a counter.
REQUEST_ID = re.compile(r"^[0-9a-f]{8}-[0-9]{6,12}$")
MAX_LABEL_CHARS = 256


@dataclass(frozen=True)
class LabelSettings:
    path: Path | None = None
    token_env: str = "CI_ML_LABELS_TOKEN"  # noqa: S105 - the name of a variable
    max_rows: int = 1000
    max_bytes: int = 100 << 20


class LabelSink:
    """The route's state: the token and the appender of the labels file."""

    def __init__(self, settings: LabelSettings, max_batch: int) -> None:
        self.enabled = settings.path is not None
        self.max_rows = settings.max_rows
        self.max_batch = max_batch
        self._token = b""
        self._log: RequestLog | None = None
        if settings.path is not None:
            token = os.environ.get(settings.token_env, "")
            if len(token) < 16:
                raise InputError(f"serve.labels.path is set but the token variable "
                                 f"{settings.token_env} is unset or shorter than 16 characters: "
                                 "the label route needs one")
            self._token = token.encode()
            self._log = RequestLog(settings.path, 1.0, settings.max_bytes)

    def authorized(self, header: bytes | None) -> bool:
        if not header or not header.startswith(b"Bearer "):
            return False
        return hmac.compare_digest(header[7:].strip(), self._token)

    def accept(self, doc: Any) -> int:
        """Validate a request body (parsed JSON) and append its rows; the number written."""
        if not isinstance(doc, dict) or set(doc) != {"labels"}:
            raise RequestError(422, "body must be an object with exactly 'labels'")
        rows = doc["labels"]
        if not isinstance(rows, list) or not rows:
            raise RequestError(422, "labels: expected a non-empty list")
        if len(rows) > self.max_rows:
            raise RequestError(413, f"labels: {len(rows)} rows exceed the limit of "
                                    f"{self.max_rows}")
        checked = [self._row(i, row) for i, row in enumerate(rows)]
        ts = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        assert self._log is not None
        for rid, index, label in checked:
            self._log.record({"id": rid, "row": index, "label": label, "ts": ts})
        return len(checked)

    def _row(self, i: int, row: Any) -> tuple[str, int, Any]:
        where = f"labels[{i}]"
        if not isinstance(row, dict) or not {"id", "label"} <= set(row) or \
                not set(row) <= {"id", "row", "label"}:
            raise RequestError(422, f"{where}: expected an object with 'id', 'label' and "
                                    "optionally 'row'")
        rid, index, label = row["id"], row.get("row", 0), row["label"]
        if not isinstance(rid, str) or not REQUEST_ID.match(rid):
            raise RequestError(422, f"{where}.id: not a request id this server issues")
        if isinstance(index, bool) or not isinstance(index, int) or \
                not 0 <= index < self.max_batch:
            raise RequestError(422, f"{where}.row: expected an integer 0..{self.max_batch - 1}")
        if isinstance(label, str):
            if not label.strip() or len(label) > MAX_LABEL_CHARS:
                raise RequestError(422, f"{where}.label: empty or longer than "
                                        f"{MAX_LABEL_CHARS} characters")
        elif isinstance(label, bool) or not isinstance(label, int | float) or \
                not math.isfinite(label):
            raise RequestError(422, f"{where}.label: expected a string or a finite number")
        return rid, index, label

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
