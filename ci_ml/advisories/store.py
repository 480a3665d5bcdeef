"""A directory of OSV advisory records (YAML or JSON), indexed by PyPI package.

Layout: the PyPA advisory database's ``<package>/<ID>.yaml`` (any depth), or
record files directly in the directory. Records in a package's subdirectory are
parsed only when that package is first asked about, so auditing a handful of
pins does not parse 2,600 files; flat record files are parsed up front.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name

from ci_ml.advisories.cvss import base_score, severity_of_score
from ci_ml.advisories.versions import affected_entry_matches, first_fix_after
from ci_ml.errors import InputError
from ci_ml.scan.interface import Severity
from ci_ml.yamlio import parse_yaml

RECORD_SUFFIXES = (".yaml", ".yml", ".json")


def _jsonable(value: Any) -> Any:
    """YAML timestamps become RFC 3339 strings, as osv.dev serves them."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            return value.isoformat() + "Z"
        return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


@dataclass(frozen=True)
class Advisory:
    """One OSV record, as served to clients."""

    id: str
    record: Mapping[str, Any]
    source: Path

    @property
    def aliases(self) -> tuple[str, ...]:
        return tuple(str(a) for a in self.record.get("aliases") or ())

    @property
    def withdrawn(self) -> bool:
        return self.record.get("withdrawn") is not None

    @property
    def summary(self) -> str:
        text = self.record.get("summary") or self.record.get("details") or ""
        return " ".join(str(text).split())

    @property
    def references(self) -> tuple[str, ...]:
        return tuple(str(r["url"]) for r in self.record.get("references") or ()
                     if isinstance(r, Mapping) and r.get("url"))

    @property
    def cvss_score(self) -> float | None:
        """The highest CVSS v3 base score among the record's severity vectors."""
        scores = [s for entry in self.record.get("severity") or ()
                  if isinstance(entry, Mapping) and str(entry.get("type", "")).startswith("CVSS_V3")
                  and (s := base_score(str(entry.get("score", "")))) is not None]
        return max(scores) if scores else None

    def severity(self, unscored: Severity) -> tuple[Severity, str]:
        """Normalized severity and where it came from (``cvss`` or ``default``)."""
        score = self.cvss_score
        if score is not None:
            return severity_of_score(score), "cvss"
        label = (self.record.get("database_specific") or {}).get("severity")
        if isinstance(label, str) and Severity.parse(label) is not Severity.UNKNOWN:
            return Severity.parse(label), "database_specific"
        return unscored, "default"

    def entries_for(self, package: str) -> Iterator[Mapping[str, Any]]:
        name = canonicalize_name(package)
        for entry in self.record.get("affected") or ():
            pkg = entry.get("package") or {}
            if (str(pkg.get("ecosystem", "")).lower() == "pypi"
                    and canonicalize_name(str(pkg.get("name", ""))) == name):
                yield entry

    def affects(self, package: str, version: str) -> bool:
        return any(affected_entry_matches(e, version) for e in self.entries_for(package))

    def fix_for(self, package: str, version: str) -> str | None:
        fixes = [f for e in self.entries_for(package)
                 if affected_entry_matches(e, version) and (f := first_fix_after(e, version))]
        return fixes[0] if fixes else None


def _load_record(path: Path) -> Advisory:
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"advisories: cannot read {path}: {exc}") from exc
    try:
        # A mirror can be tampered with like any input: the same strict loader as the config.
        data = json.loads(text) if path.suffix == ".json" else parse_yaml(text, str(path),
                                                                          InputError)
    except ValueError as exc:
        raise InputError(f"advisories: {path} is not a valid OSV record: "
                         f"{str(exc).splitlines()[0]}") from exc
    if not isinstance(data, Mapping) or not isinstance(data.get("id"), str):
        raise InputError(f"advisories: {path} is not an OSV record (no 'id')")
    return Advisory(id=data["id"], record=_jsonable(data), source=path)


class AdvisoryDB:
    """Thread-safe, lazily parsed index of a directory of OSV records."""

    def __init__(self, root: Path) -> None:
        if not root.is_dir():
            raise InputError(f"advisories: {root} is not a directory of OSV records")
        self.root = root
        self._lock = threading.Lock()
        self._pending: dict[str, list[Path]] = {}
        self._loaded: dict[str, list[Advisory]] = {}
        flat: list[Path] = []
        for path in sorted(root.rglob("*")):
            hidden = path.name.startswith(".")
            if path.suffix not in RECORD_SUFFIXES or hidden or not path.is_file():
                continue
            if path.parent == root:
                flat.append(path)
            else:
                self._pending.setdefault(canonicalize_name(path.parent.name), []).append(path)
        if not flat and not self._pending:
            raise InputError(f"advisories: {root} holds no OSV records (*.yaml, *.json)")
        for path in flat:
            self._index(_load_record(path))

    def _index(self, advisory: Advisory) -> None:
        for entry in advisory.record.get("affected") or ():
            name = canonicalize_name(str((entry.get("package") or {}).get("name", "")))
            bucket = self._loaded.setdefault(name, [])
            if all(a.id != advisory.id for a in bucket):
                bucket.append(advisory)

    @property
    def packages(self) -> int:
        return len(set(self._pending) | set(self._loaded))

    def for_package(self, package: str) -> tuple[Advisory, ...]:
        name = canonicalize_name(package)
        with self._lock:
            pending = self._pending.pop(name, None)
            if pending:
                for path in pending:
                    self._index(_load_record(path))
            return tuple(self._loaded.get(name, ()))

    def query(self, package: str, version: str) -> list[Advisory]:
        """Every record affecting ``package`` at ``version`` (withdrawn ones too, as OSV)."""
        return [a for a in self.for_package(package) if a.affects(package, version)]

    def find(self, package: str, ids: Any) -> Advisory | None:
        """The record of ``package`` whose id or alias is one of ``ids``."""
        wanted = {str(i) for i in ids}
        for advisory in self.for_package(package):
            if advisory.id in wanted or wanted & set(advisory.aliases):
                return advisory
        return None
