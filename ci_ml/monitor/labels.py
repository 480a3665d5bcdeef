"""Late labels: the true outcome of served requests, keyed by the request id the server returned.

Files are CSV (header with ``id`` and ``label``, optionally ``row``) or JSON lines
(``{"id": ..., "row": 0, "label": ...}``); ``row`` is the position in a batched
request (default 0). A label is only ever joined to a logged request of the
monitored model with that id and row: label rows for ids the log does not hold are
counted and reported, never used. A row that does not parse is counted, not fatal.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ci_ml.monitor.interface import MonitorInputError

MAX_ID_LENGTH = 200
DEFAULT_MAX_LABELS = 5_000_000


@dataclass
class Labels:
    values: dict[tuple[str, int], str] = field(default_factory=dict)
    rows: int = 0
    bad: int = 0
    bad_examples: list[str] = field(default_factory=list)
    duplicate: int = 0

    @property
    def ids(self) -> set[str]:
        return {key[0] for key in self.values}

    def _bad(self, where: str, why: str) -> None:
        self.bad += 1
        if len(self.bad_examples) < 5:
            self.bad_examples.append(f"{where}: {why}")

    def add(self, where: str, rid: Any, row: Any, label: Any, limit: int) -> None:
        self.rows += 1
        if not isinstance(rid, str | int) or isinstance(rid, bool):
            return self._bad(where, "no request id")
        rid = str(rid).strip()
        if not rid or len(rid) > MAX_ID_LENGTH:
            return self._bad(where, "empty or over-long request id")
        try:
            index = 0 if row in (None, "") else int(row)
        except (TypeError, ValueError):
            return self._bad(where, "row is not an integer")
        if index < 0:
            return self._bad(where, "negative row")
        if label is None or isinstance(label, dict | list) or str(label).strip() == "":
            return self._bad(where, "no label")
        key = (rid, index)
        if key in self.values:
            self.duplicate += 1    # the first label given for a request row stands
            return None
        if len(self.values) >= limit:
            raise MonitorInputError(f"{where}: more than {limit} labels; raise monitor.max_labels "
                                    "or narrow the labels file to the window")
        self.values[key] = _label_text(label)
        return None


def _label_text(label: Any) -> str:
    if isinstance(label, float) and label.is_integer():
        return str(int(label))
    return str(label).strip()


def _read_csv(path: Path, text: str, labels: Labels, limit: int) -> None:
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None) or []
    names = [h.strip().lower() for h in header]
    if "id" not in names or "label" not in names:
        raise MonitorInputError(f"{path}: a labels CSV needs the columns 'id' and 'label' "
                                f"(found {', '.join(header[:6]) or 'no header'})")
    i_id, i_label = names.index("id"), names.index("label")
    i_row = names.index("row") if "row" in names else None
    for number, fields in enumerate(reader, start=2):
        if not fields:
            continue
        if len(fields) != len(header):
            labels.rows += 1
            labels._bad(f"{path.name}:{number}", f"{len(fields)} fields, header has {len(header)}")
            continue
        labels.add(f"{path.name}:{number}", fields[i_id],
                   fields[i_row] if i_row is not None else None, fields[i_label], limit)


def _read_jsonl(path: Path, text: str, labels: Labels, limit: int) -> None:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path.name}:{number}"
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError):
            labels.rows += 1
            labels._bad(where, "not JSON")
            continue
        if not isinstance(obj, dict):
            labels.rows += 1
            labels._bad(where, "not a JSON object")
            continue
        labels.add(where, obj.get("id"), obj.get("row"), obj.get("label"), limit)


def label_files(paths: Sequence[Path]) -> list[Path]:
    """Each path preceded by its rotated ``<path>.1`` (the server's label route rotates);
    a path that does not exist is kept, so that reading it names it."""
    files: list[Path] = []
    for path in paths:
        rotated = path.with_name(path.name + ".1")
        if rotated.is_file():
            files.append(rotated)
        if path.exists() or not rotated.is_file():
            files.append(path)
    return files


def read_labels(paths: Sequence[Path], limit: int = DEFAULT_MAX_LABELS) -> Labels:
    labels = Labels()
    for path in label_files(paths):
        if path.is_dir():
            raise MonitorInputError(f"{path}: is a directory, expected a labels file")
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise MonitorInputError(f"{path}: labels file not found") from None
        except OSError as exc:
            raise MonitorInputError(f"{path}: cannot read labels ({exc.strerror})") from exc
        if b"\x00" in data:
            raise MonitorInputError(f"{path}: binary data, expected CSV or JSON lines of labels")
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise MonitorInputError(f"{path}: not UTF-8 text (byte {exc.start})") from exc
        first = text.lstrip()[:1]
        if path.suffix.lower() in (".jsonl", ".ndjson", ".json") or first == "{":
            _read_jsonl(path, text, labels, limit)
        else:
            try:
                _read_csv(path, text, labels, limit)
            except csv.Error as exc:
                raise MonitorInputError(f"{path}: not a readable CSV ({exc})") from exc
    return labels
