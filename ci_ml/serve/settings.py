"""The server's settings: from the config's ``serve`` section, or a JSON file in the image."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ci_ml.errors import InputError
from ci_ml.serve.labels import LabelSettings


def cgroup_cpu_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs the container may use (quota / period), or None when unlimited or unknown."""
    try:
        text = (root / "cpu.max").read_text().split()           # cgroup v2: "max 100000"
        if text and text[0] != "max":
            return int(text[0]) / int(text[1])
        if text:
            return None
    except (OSError, ValueError, IndexError):
        pass
    try:                                                         # cgroup v1
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class Limits:
    max_batch: int = 256
    max_body_bytes: int = 1 << 20
    max_connections: int = 64
    request_timeout_s: float = 10.0
    drain_timeout_s: float = 10.0
    max_abs_input: float = 1e12
    max_string: int = 4096
    max_header_bytes: int = 16384


@dataclass(frozen=True)
class LogSettings:
    path: Path | None = None
    sample_rate: float = 0.1
    max_bytes: int = 100 << 20


@dataclass(frozen=True)
class ServeSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    threads: int = 1
    # One per CPU, as the config schema's default: inference runs inline on the event loop,
    # so one worker uses one core (benchmarks/serve.py: the default is what wins).
    workers: int = 0
    name: str | None = None
    version: str | None = None
    limits: Limits = field(default_factory=Limits)
    log: LogSettings = field(default_factory=LogSettings)
    labels: LabelSettings = field(default_factory=LabelSettings)

    @property
    def worker_count(self) -> int:
        """``workers`` 0 means one per CPU this process may use (at most 8): the CPUs it
        may run on, capped by a container's CPU quota (cgroup v2 or v1)."""
        if self.workers > 0:
            return self.workers
        try:
            cpus = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            cpus = os.cpu_count() or 1
        quota = cgroup_cpu_quota()
        if quota is not None:
            cpus = min(cpus, max(1, math.ceil(quota)))
        return max(1, min(cpus, 8))

    @classmethod
    def from_section(cls, section: Mapping[str, Any], root: Path | None = None) -> ServeSettings:
        """From a config ``serve`` section (defaults filled in); paths relative to ``root``."""
        limits = dict(section.get("limits") or {})
        log = dict(section.get("log") or {})
        labels = dict(section.get("labels") or {})
        for part in (log, labels):
            if part.get("path") is not None:
                p = Path(str(part["path"]))
                part["path"] = p if p.is_absolute() or root is None else root / p
        try:
            return cls(
                host=str(section.get("host", cls.host)), port=int(section.get("port", cls.port)),
                threads=int(section.get("threads", cls.threads)),
                workers=int(section.get("workers", cls.workers)),
                name=str(section["name"]) if section.get("name") else None,
                version=str(section["version"]) if section.get("version") is not None else None,
                limits=Limits(**{k: limits[k] for k in Limits.__dataclass_fields__ if k in limits}),
                log=LogSettings(**{k: log[k] for k in LogSettings.__dataclass_fields__
                                   if k in log}),
                labels=LabelSettings(**{k: labels[k] for k in LabelSettings.__dataclass_fields__
                                        if k in labels}),
            )
        except (TypeError, ValueError) as exc:
            raise InputError(f"serve settings: {exc}") from exc

    def with_address(self, host: str | None, port: int | None) -> ServeSettings:
        return replace(self, host=host if host is not None else self.host,
                       port=port if port is not None else self.port)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["log"]["path"] = str(self.log.path) if self.log.path else None
        data["labels"]["path"] = str(self.labels.path) if self.labels.path else None
        return data

    @classmethod
    def read(cls, path: Path) -> ServeSettings:
        try:
            data = json.loads(path.read_text("utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(f"{path}: cannot read server settings ({exc})") from exc
        if not isinstance(data, dict):
            raise InputError(f"{path}: server settings must be a JSON object")
        return cls.from_section(data)
