"""DAST engines: one interface, ZAP's alert model as the common value type.

Both engines (ZAP through ``zapv2``, and the built-in one) report ``Alert``s with
ZAP's fields and plugin ids, so one rules file and one conversion to ``Finding``
serve both, and a finding reads the same whichever engine raised it.
"""

from __future__ import annotations

import enum
import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ci_ml.scan.interface import ScanError


class Risk(enum.IntEnum):
    """ZAP's risk codes."""

    INFO = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3

    @classmethod
    def parse(cls, value: Any) -> Risk:
        text = str(value).strip().lower()
        names = {"informational": 0, "info": 0, "low": 1, "medium": 2, "high": 3}
        if text in names:
            return cls(names[text])
        try:
            return cls(int(text))
        except ValueError:
            raise DastError(f"unknown ZAP risk {value!r}") from None


class AlertConfidence(enum.IntEnum):
    """ZAP's confidence codes (0 means a user marked the alert a false positive)."""

    FALSE_POSITIVE = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CONFIRMED = 4

    @classmethod
    def parse(cls, value: Any) -> AlertConfidence:
        text = str(value).strip().lower().replace(" ", "_")
        names = {"false_positive": 0, "falsepositive": 0, "low": 1, "medium": 2, "high": 3,
                 "confirmed": 4, "user_confirmed": 4}
        if text in names:
            return cls(names[text])
        try:
            return cls(int(text))
        except ValueError:
            raise DastError(f"unknown ZAP confidence {value!r}") from None


@dataclass(frozen=True)
class Alert:
    """One alert instance, in ZAP's terms (``/JSON/core/view/alerts/`` fields)."""

    plugin_id: str
    name: str
    risk: Risk
    confidence: AlertConfidence
    url: str
    method: str = "GET"
    param: str = ""
    attack: str = ""
    evidence: str = ""
    alert_ref: str = ""
    description: str = ""
    solution: str = ""
    reference: str = ""
    other: str = ""
    cwe: int = -1
    wasc: int = -1

    @property
    def ref(self) -> str:
        return self.alert_ref or self.plugin_id

    def key(self) -> tuple[str, str, str, str]:
        """Alerts with the same key are one finding (ZAP's own de-duplication)."""
        return (self.ref, self.method.upper(), self.url, self.param.lower())

    def to_json(self) -> dict[str, Any]:
        return {"pluginId": self.plugin_id, "alertRef": self.ref, "name": self.name,
                "risk": self.risk.name.title(), "riskcode": int(self.risk),
                "confidence": int(self.confidence), "url": self.url, "method": self.method,
                "param": self.param, "attack": self.attack, "evidence": self.evidence,
                "description": self.description, "solution": self.solution,
                "reference": self.reference, "other": self.other, "cweid": self.cwe,
                "wascid": self.wasc}


@dataclass(frozen=True)
class InputSpec:
    """What a prediction endpoint takes, from its OpenAPI document or the ONNX model."""

    predict_path: str = "/predict"
    sample_shape: tuple[int, ...] = ()
    max_batch: int | None = None
    max_body_bytes: int | None = None
    example: tuple[float, ...] = ()

    @property
    def n_features(self) -> int:
        n = 1
        for d in self.sample_shape:
            n *= d
        return n


@dataclass(frozen=True)
class DastTarget:
    url: str                                  # base URL, no trailing slash
    spec: InputSpec | None = None             # None: no prediction endpoint was found
    openapi: Mapping[str, Any] | None = None
    openapi_url: str | None = None
    paths: tuple[str, ...] = ()               # GET paths to crawl


@dataclass(frozen=True)
class DastOptions:
    active: bool = True
    timeout_s: float = 10.0
    max_duration_s: float = 600.0


@dataclass(frozen=True)
class DastReport:
    engine: str
    engine_version: str
    target: str
    alerts: tuple[Alert, ...]
    requests: int = 0
    duration_s: float = 0.0
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        return {"engine": self.engine, "engine_version": self.engine_version,
                "target": self.target, "requests": self.requests,
                "duration_s": round(self.duration_s, 3), "notes": list(self.notes),
                "alerts": [a.to_json() for a in self.alerts]}

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2)


class DastError(ScanError):
    """The DAST scan could not run: target unreachable, ZAP unreachable or answering errors."""


class DastEngine(ABC):
    name: ClassVar[str]

    @abstractmethod
    def version(self) -> str:
        """The engine's version (ZAP's own version for the ZAP engine)."""

    @abstractmethod
    def scan(self, target: DastTarget, options: DastOptions) -> DastReport:
        """Scan the running target; raises DastError if the scan could not run."""
