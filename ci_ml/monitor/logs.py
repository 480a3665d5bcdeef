"""Reading the server's sampled request log: streaming, windowed, and never trusting a line.

The format (docs/serve.md): one JSON object per line with ``id``, ``ts`` (RFC 3339
UTC), ``model_digest``, ``model_version``, ``route``, ``status``, ``latency_ms``,
``inputs`` (the rows as received: a list per row, or named fields) and ``outputs``
(per row: the predicted label with probabilities, or the predicted value).

A line that is not JSON, is cut short, is not an object of that shape, or is
longer than ``max_line_bytes`` is counted as corrupt (with its file and line
number) and skipped; a line from another model is counted and skipped; nothing in
a line can stop the reading. Files are read line by line: memory does not grow
with the log.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ci_ml.monitor.interface import MonitorInputError
from ci_ml.monitor.model import ModelIdentity

DEFAULT_MAX_LINE_BYTES = 8 << 20
MAX_EXAMPLES = 5
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str, key: str = "window") -> timedelta:
    """``90s``, ``30m``, ``24h``, ``7d``, ``1h30m``: a positive duration."""
    cleaned = str(text).strip().lower().replace(" ", "")
    parts = _DURATION.findall(cleaned)
    if not parts or "".join(n + u for n, u in parts) != cleaned:
        raise MonitorInputError(f"{key}: {text!r} is not a duration (e.g. 30m, 24h, 7d)")
    seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise MonitorInputError(f"{key}: {text!r} must be longer than zero")
    return timedelta(seconds=seconds)


def parse_time(text: Any) -> datetime | None:
    """An RFC 3339 timestamp as an aware UTC datetime; None if it is not one."""
    if not isinstance(text, str) or not 10 <= len(text) <= 40:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    if value.tzinfo is None:
        return None   # RFC 3339 requires an offset: a naive time is ambiguous
    return value.astimezone(UTC)


@dataclass(frozen=True)
class Window:
    start: datetime       # exclusive
    end: datetime         # inclusive

    def __contains__(self, ts: datetime) -> bool:
        return self.start < ts <= self.end

    def to_json(self) -> dict[str, str]:
        return {"start": self.start.isoformat().replace("+00:00", "Z"),
                "end": self.end.isoformat().replace("+00:00", "Z")}


@dataclass(frozen=True)
class Record:
    """One valid log line of the monitored model inside the window."""

    id: str
    ts: datetime
    status: int
    latency_ms: float | None
    route: str
    inputs: Sequence[Any]
    outputs: Sequence[Any]


class LogCounters:
    """What the reader saw, including what it had to skip."""

    def __init__(self) -> None:
        self.lines = 0
        self.outside_window = 0
        self.corrupt = 0
        self.corrupt_examples: list[str] = []
        self.other_model = 0
        self.other_models: dict[str, int] = {}

    def bad(self, where: str, why: str) -> None:
        self.corrupt += 1
        if len(self.corrupt_examples) < MAX_EXAMPLES:
            self.corrupt_examples.append(f"{where}: {why}")

    def other(self, digest: Any, version: Any) -> None:
        self.other_model += 1
        name = f"{str(digest)[:12]}" + (f" (version {version})" if version is not None else "")
        if name in self.other_models or len(self.other_models) < 20:
            self.other_models[name] = self.other_models.get(name, 0) + 1


def log_files(paths: Sequence[Path]) -> list[Path]:
    """The files to read: each path, preceded by its rotated ``<path>.1`` when present."""
    files: list[Path] = []
    for path in paths:
        rotated = path.with_name(path.name + ".1")
        if rotated.is_file():
            files.append(rotated)
        if path.is_dir():
            raise MonitorInputError(f"{path}: is a directory, expected a request log (JSON lines)")
        if path.is_file():
            files.append(path)
        elif not rotated.is_file():
            raise MonitorInputError(f"{path}: request log not found")
    return files


def _lines(path: Path, max_bytes: int, counters: LogCounters) -> Iterator[tuple[int, str]]:
    """Decoded lines with their numbers; an over-long or undecodable line is counted, not kept."""
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed in finally; a generator holds it
    except OSError as exc:
        raise MonitorInputError(f"{path}: cannot read the request log ({exc.strerror})") from exc
    try:
        number = 0
        while True:
            raw = fh.readline(max_bytes + 1)
            if not raw:
                return
            number += 1
            counters.lines += 1
            if len(raw) > max_bytes:
                while raw and not raw.endswith(b"\n"):   # skip the rest of the line
                    raw = fh.readline(1 << 20)
                counters.bad(f"{path.name}:{number}", f"line longer than {max_bytes} bytes")
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                counters.bad(f"{path.name}:{number}", "not UTF-8")
                continue
            if text.strip():
                yield number, text
            else:
                counters.lines -= 1
    finally:
        fh.close()


def _check(obj: Any) -> str | None:
    """Why a parsed line is not a log record of the expected shape (None: it is)."""
    if not isinstance(obj, dict):
        return "not a JSON object"
    if not isinstance(obj.get("id"), str) or not obj["id"]:
        return "no request id"
    status = obj.get("status")
    if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599:
        return "no HTTP status"
    if "model_digest" not in obj:
        return "no model_digest"
    latency = obj.get("latency_ms")
    if latency is not None and (not isinstance(latency, int | float) or isinstance(latency, bool)
                                or not math.isfinite(latency) or latency < 0):
        return "bad latency_ms"
    if 200 <= status < 300:
        inputs, outputs = obj.get("inputs"), obj.get("outputs")
        if not isinstance(inputs, list) or not isinstance(outputs, list):
            return "an answered request without inputs and outputs lists"
        if len(inputs) != len(outputs):
            return f"{len(inputs)} input rows but {len(outputs)} outputs"
    return None


def read_log(paths: Sequence[Path], window: Window, model: ModelIdentity | None,
             counters: LogCounters, *, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
             seen_ids: set[str] | None = None) -> Iterator[Record]:
    """Valid records of ``model`` inside ``window``; everything else is counted.

    ``seen_ids``: when given, the ids among them that appear anywhere in the log (any
    time, this model) are removed, so the caller learns which label ids match nothing.
    """
    for path in log_files(paths):
        for number, text in _lines(path, max_line_bytes, counters):
            where = f"{path.name}:{number}"
            try:
                obj = json.loads(text)
            except ValueError:
                counters.bad(where, "not JSON (truncated or corrupt)")
                continue
            except RecursionError:
                counters.bad(where, "JSON nested too deeply")
                continue
            why = _check(obj)
            if why is not None:
                counters.bad(where, why)
                continue
            ts = parse_time(obj.get("ts"))
            if ts is None:
                counters.bad(where, "no RFC 3339 timestamp 'ts'")
                continue
            if model is not None and not model.matches(obj["model_digest"],
                                                       obj.get("model_version")):
                counters.other(obj["model_digest"], obj.get("model_version"))
                continue
            if seen_ids is not None and obj["id"] in seen_ids:
                seen_ids.discard(obj["id"])
            if ts not in window:
                counters.outside_window += 1
                continue
            latency = obj.get("latency_ms")
            yield Record(obj["id"], ts, obj["status"],
                         float(latency) if latency is not None else None,
                         str(obj.get("route", "")), obj.get("inputs") or [],
                         obj.get("outputs") or [])
