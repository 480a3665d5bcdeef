"""The scanner interface and the normalized findings model.

Every adapter turns its tool's native output into the same frozen ``Finding``
and every tool failure into ``ScanError``. A scan that did not run is a
``ScanResult`` with status ``ERROR``, never an empty list of findings.
"""

from __future__ import annotations

import enum
import functools
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ci_ml.errors import ToolError
from ci_ml.fsutil import hash_json


class Severity(enum.IntEnum):
    """Normalized severity; ordered so ``>=`` compares badness."""

    UNKNOWN = 0
    INFO = 1
    LOW = 2
    MEDIUM = 3
    HIGH = 4
    CRITICAL = 5

    @classmethod
    def parse(cls, value: str | None) -> Severity:
        if not value:
            return cls.UNKNOWN
        key = value.strip().upper()
        aliases = {"MODERATE": "MEDIUM", "INFORMATIONAL": "INFO", "NEGLIGIBLE": "INFO",
                   "WARNING": "MEDIUM", "ERROR": "HIGH", "NOTE": "LOW", "NONE": "INFO"}
        key = aliases.get(key, key)
        return cls.__members__.get(key, cls.UNKNOWN)

    @property
    def label(self) -> str:
        return self.name.lower()


class Confidence(enum.IntEnum):
    UNKNOWN = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3

    @classmethod
    def parse(cls, value: str | None) -> Confidence:
        return cls.__members__.get((value or "").strip().upper(), cls.UNKNOWN)


@dataclass(frozen=True)
class Location:
    """Where a finding is: a file and line, a package, an image layer or a URL."""

    path: str | None = None
    line: int | None = None
    package: str | None = None
    version: str | None = None
    image: str | None = None
    layer: str | None = None
    url: str | None = None
    digest: str | None = None   # image digest (sha256:...): a waiver scope, not part of identity

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Location:
        return cls(**{k: data.get(k) for k in cls.__dataclass_fields__})

    def describe(self) -> str:
        if self.package:
            return f"{self.package}@{self.version}" if self.version else self.package
        if self.path:
            return f"{self.path}:{self.line}" if self.line else self.path
        return self.url or self.image or "-"


@dataclass(frozen=True)
class SourceSuppression:
    """A suppression written in the tree under review: a ``# nosec`` comment, or a bandit
    config in the scanned tree. Shown and counted, never obeyed: the author of a change can
    write one, so only a waiver (in the security team's file) suppresses a finding."""

    origin: str               # "# nosec B602", or "src/.bandit skips B602"
    path: str                 # the file that holds it, relative to the project
    line: int | None = None

    def describe(self) -> str:
        return f"{self.origin} ({self.path}:{self.line})" if self.line else (
            f"{self.origin} ({self.path})")

    def to_json(self) -> dict[str, Any]:
        return {"origin": self.origin, "path": self.path, "line": self.line}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SourceSuppression:
        line = data.get("line")
        return cls(origin=str(data["origin"]), path=str(data["path"]),
                   line=int(line) if line is not None else None)


@dataclass(frozen=True)
class Finding:
    id: str                 # the advisory or rule instance id (PYSEC-..., B602, 10020...)
    rule: str               # the rule or check name
    scanner: str            # the adapter's name: code, deps, image, iac, model, dast
    severity: Severity
    title: str
    location: Location
    confidence: Confidence = Confidence.UNKNOWN
    fix_version: str | None = None
    references: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)
    # A suppression the tree under review asked for (not a waiver): reported, not obeyed.
    suppressed_in_source: SourceSuppression | None = None

    @functools.cached_property
    def fingerprint(self) -> str:
        """Stable across runs: what it is and where, not when it was seen or its line number
        alone (a line shifts when code above it changes; the path and rule do not)."""
        loc = self.location
        return hash_json([self.scanner, self.id, self.rule, loc.path, loc.package, loc.version,
                          loc.image, loc.url, self.raw.get("code_hash")])[:32]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "rule": self.rule, "scanner": self.scanner,
            "severity": self.severity.label, "confidence": self.confidence.name.lower(),
            "title": self.title, "location": self.location.to_json(),
            "fingerprint": self.fingerprint, "fix_version": self.fix_version,
            "references": list(self.references), "aliases": list(self.aliases),
            "raw": dict(self.raw),
            "suppressed_in_source": (self.suppressed_in_source.to_json()
                                     if self.suppressed_in_source else None),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Finding:
        return cls(
            id=str(data["id"]), rule=str(data["rule"]), scanner=str(data["scanner"]),
            severity=Severity.parse(data.get("severity")), title=str(data.get("title", "")),
            location=Location.from_json(data.get("location", {})),
            confidence=Confidence.parse(data.get("confidence")),
            fix_version=data.get("fix_version"),
            references=tuple(data.get("references", ())), aliases=tuple(data.get("aliases", ())),
            raw=dict(data.get("raw", {})),
            suppressed_in_source=(SourceSuppression.from_json(data["suppressed_in_source"])
                                  if data.get("suppressed_in_source") else None),
        )


class ScanStatus(enum.Enum):
    OK = "ok"
    # It ran, but some of what it was asked to cover could not be checked (a dependency
    # the advisory service did not answer for): never a clean scan, the gate blocks on it.
    INCOMPLETE = "incomplete"
    ERROR = "error"      # the tool is missing, crashed, timed out or its output did not parse


@dataclass(frozen=True)
class ScanResult:
    scanner: str
    status: ScanStatus
    findings: tuple[Finding, ...] = ()
    tool: str = ""
    tool_version: str = ""
    error: str | None = None
    targets: tuple[str, ...] = ()
    # What the scan could not cover although it ran (e.g. OS packages with no offline data).
    notes: tuple[str, ...] = ()
    # With status INCOMPLETE: each thing the scan could not check (a package, a file) and
    # why, shaped as findings so a waiver can accept one by id and scope; never counted as
    # findings.
    gaps: tuple[Finding, ...] = ()
    # Optional, UTC ISO 8601 to the second. The scan steps leave them unset so that equal
    # findings give byte-identical results (the result's hash keys downstream caches).
    started_at: str | None = None
    finished_at: str | None = None

    @property
    def ran(self) -> bool:
        """The tool ran to the end (its findings are real), complete or not."""
        return self.status is not ScanStatus.ERROR

    def to_json(self) -> dict[str, Any]:
        return {
            "scanner": self.scanner, "status": self.status.value, "tool": self.tool,
            "tool_version": self.tool_version, "error": self.error,
            "targets": list(self.targets), "notes": list(self.notes),
            "started_at": self.started_at, "finished_at": self.finished_at,
            "findings": [f.to_json() for f in self.findings],
            "gaps": [g.to_json() for g in self.gaps],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ScanResult:
        return cls(
            scanner=str(data["scanner"]), status=ScanStatus(data["status"]),
            findings=tuple(Finding.from_json(f) for f in data.get("findings", ())),
            tool=str(data.get("tool", "")), tool_version=str(data.get("tool_version", "")),
            error=data.get("error"), targets=tuple(data.get("targets", ())),
            notes=tuple(data.get("notes", ())), started_at=data.get("started_at"),
            finished_at=data.get("finished_at"),
            gaps=tuple(Finding.from_json(g) for g in data.get("gaps", ())),
        )

    @classmethod
    def failed(cls, scanner: str, tool: str, error: str, *, started_at: str | None = None,
               finished_at: str | None = None) -> ScanResult:
        return cls(scanner=scanner, status=ScanStatus.ERROR, tool=tool, error=error,
                   started_at=started_at, finished_at=finished_at)


class ScanError(ToolError):
    """The scanner's tool is missing, crashed, timed out or printed unparsable output."""


@dataclass(frozen=True)
class ScanRequest:
    """What to scan, resolved from the config or the command line."""

    root: Path
    targets: tuple[Path, ...] = ()
    options: Mapping[str, Any] = field(default_factory=dict)


class Scanner(ABC):
    name: ClassVar[str]
    tool: ClassVar[str]

    @abstractmethod
    def tool_version(self) -> str:
        """The tool's version; raises ScanError if the tool is missing."""

    @abstractmethod
    def scan(self, request: ScanRequest) -> ScanResult:
        """Run the tool and normalize its output; raises ScanError on tool failure."""
