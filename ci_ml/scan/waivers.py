"""Waivers: a finding accepted on purpose, for one scope, by a named owner, until a date.

The same rules for every scanner. A waiver names a finding id (or one of its
aliases, e.g. a CVE) and exactly one scope:
- ``package: NAME`` or ``package: NAME@VERSION`` (dependency and image packages),
- ``path: FILE``, a glob matched per path segment (``src/legacy/*.py`` covers
  ``src/legacy/a.py`` but never ``src/legacy/sub/b.py``: ``*`` does not cross
  ``/``), ``**`` for any depth (``src/**/*.py``), or a directory (``deploy/``,
  also any depth); recursive scopes are marked as such in every report,
- ``image: sha256:DIGEST`` (the image ID trivy reports).
``scanner:`` optionally narrows it further. A waiver suppresses matching
findings through its ``expires`` date; from the day after, it stops
suppressing and is reported as expired. A waiver that matches nothing is
reported as stale, and one expiring within 14 days as expiring.

Example ``waivers.yaml``::

    waivers:
      - id: PYSEC-2018-28
        package: requests
        owner: alice@example.com
        reason: the service never follows redirects to http
        expires: 2025-03-31
"""

from __future__ import annotations

import datetime as dt
import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from packaging.utils import canonicalize_name

from ci_ml.config import Config
from ci_ml.errors import ConfigError
from ci_ml.scan.interface import Finding
from ci_ml.yamlio import check_finite, parse_yaml, read_text_file

SCOPES = ("package", "path", "image")
SCANNER_NAMES = ("code", "deps", "image", "iac", "model", "dast")
REQUIRED = ("id", "owner", "reason", "expires")
KNOWN_KEYS = frozenset({*REQUIRED, *SCOPES, "scanner"})
EXPIRY_WARNING_DAYS = 14


@dataclass(frozen=True)
class Scope:
    kind: str      # package | path | image
    value: str

    @property
    def recursive(self) -> bool:
        """A path scope that covers files at any depth (``**`` or ``dir/``): shown as such."""
        return self.kind == "path" and recursive_path(self.value)

    def describe(self) -> str:
        return f"{self.kind} {self.value}" + (" (any depth)" if self.recursive else "")


@dataclass(frozen=True)
class Waiver:
    """One accepted finding: an id (or rule, or alias) within one scope, until a date."""

    id: str                     # the finding id, rule or alias it accepts (B602, PYSEC-, CVE-)
    scope: Scope                # package NAME[@VERSION], path FILE|GLOB|DIR/, image sha256:...
    owner: str
    reason: str
    expires: dt.date            # in force through this date
    scanner: str | None = None
    entry: int = field(default=0, compare=False)     # position in the waivers file
    source: str = field(default="", compare=False)   # the waivers file

    @property
    def package(self) -> str | None:
        return self.scope.value if self.scope.kind == "package" else None

    @property
    def path(self) -> str | None:
        return self.scope.value if self.scope.kind == "path" else None

    @property
    def image(self) -> str | None:
        return self.scope.value if self.scope.kind == "image" else None

    def describe(self) -> str:
        return f"{self.id} ({self.scope.describe()}, owner {self.owner}, expires {self.expires})"

    def expired(self, today: dt.date) -> bool:
        return today > self.expires

    def in_force(self, today: dt.date) -> bool:
        return not self.expired(today)

    def matches(self, finding: Finding) -> bool:
        """The waiver names the finding (its id, rule or an alias) and its scope holds."""
        if self.scanner is not None and finding.scanner != self.scanner:
            return False
        if self.id.casefold() not in _names(finding):
            return False
        loc = finding.location
        if self.scope.kind == "package":
            name, _, version = self.scope.value.partition("@")
            return (loc.package is not None
                    and canonicalize_name(loc.package) == canonicalize_name(name)
                    and (not version or loc.version == version))
        if self.scope.kind == "path":
            return loc.path is not None and _path_matches(loc.path, self.scope.value)
        return loc.digest is not None and _digest(loc.digest) == _digest(self.scope.value)

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "id": self.id, self.scope.kind: self.scope.value, "owner": self.owner,
            "reason": self.reason, "expires": self.expires.isoformat(),
            "scanner": self.scanner, "entry": self.entry}
        if self.scope.recursive:
            doc["recursive"] = True
        return doc


def _names(finding: Finding) -> set[str]:
    return {finding.id.casefold(), finding.rule.casefold(),
            *(a.casefold() for a in finding.aliases)}


def _digest(value: str) -> str:
    value = value.strip().lower()
    return value if value.startswith("sha256:") else f"sha256:{value}"


def _strip_dot(path: str) -> str:
    while path.startswith("./"):
        path = path[2:]
    return "" if path == "." else path


def recursive_path(pattern: str) -> bool:
    """A path scope that reaches any depth: ``**`` in it, or a directory (``deploy/``)."""
    pattern = _strip_dot(pattern)
    return pattern.endswith("/") or "**" in pattern.split("/")


def _path_matches(path: str, pattern: str) -> bool:
    """Glob matching by path segment: ``*``, ``?`` and ``[...]`` stay inside one segment (never
    cross ``/``); only a whole ``**`` segment spans directories (zero or more); a pattern
    ending in ``/`` is a directory and covers everything below it."""
    path, pattern = _strip_dot(path), _strip_dot(pattern)
    if not pattern:
        return True
    if pattern.endswith("/"):
        pattern += "**"
    return _segments_match(path.split("/"), pattern.split("/"))


def _segments_match(parts: Sequence[str], pats: Sequence[str]) -> bool:
    # Iterative two-pointer match with backtracking to the last '**' (linear-ish, no recursion).
    i = j = 0
    star_j, star_i = -1, 0
    while i < len(parts):
        if j < len(pats) and pats[j] == "**":
            star_j, star_i = j, i
            j += 1
        elif j < len(pats) and fnmatch.fnmatchcase(parts[i], pats[j]):
            i += 1
            j += 1
        elif star_j >= 0:
            star_i += 1
            i, j = star_i, star_j + 1
        else:
            return False
    while j < len(pats) and pats[j] == "**":
        j += 1
    return j == len(pats)


class Suppressed(NamedTuple):
    """A waived finding and the waiver in force that covers it (also unpacks as a pair)."""

    finding: Finding
    waiver: Waiver

    def to_json(self) -> dict[str, Any]:
        return {"finding": self.finding.to_json(), "waiver": self.waiver.to_json()}


@dataclass(frozen=True)
class ExpiredWaiver:
    waiver: Waiver
    findings: tuple[Finding, ...]

    def to_json(self) -> dict[str, Any]:
        return {"waiver": self.waiver.to_json(),
                "findings": [f.fingerprint for f in self.findings]}


@dataclass(frozen=True)
class WaiverReport:
    kept: tuple[Finding, ...]
    suppressed: tuple[Suppressed, ...]
    expired: tuple[ExpiredWaiver, ...]
    stale: tuple[Waiver, ...]
    expiring: tuple[Waiver, ...]
    today: dt.date

    @property
    def suppressed_fingerprints(self) -> frozenset[str]:
        return frozenset(s.finding.fingerprint for s in self.suppressed)

    @property
    def uncovered_expired(self) -> tuple[Waiver, ...]:
        """Expired waivers that leave a finding uncovered: renewing a waiver by adding a new
        entry for the same finding keeps the old, expired entry from blocking."""
        kept = {f.fingerprint for f in self.kept}
        return tuple(e.waiver for e in self.expired
                     if any(f.fingerprint in kept for f in e.findings))

    @property
    def expiring_soon(self) -> tuple[Waiver, ...]:
        return self.expiring

    def waiver_for(self, finding: Finding) -> Waiver | None:
        fp = finding.fingerprint
        return next((s.waiver for s in self.suppressed if s.finding.fingerprint == fp), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "today": self.today.isoformat(),
            "kept": len(self.kept),
            "suppressed": [s.to_json() for s in self.suppressed],
            "expired": [e.to_json() for e in self.expired],
            "stale": [w.to_json() for w in self.stale],
            "expiring": [w.to_json() for w in self.expiring],
        }

    def messages(self) -> list[str]:
        """One line per thing a person should act on: expired, stale and expiring waivers."""
        kept = {f.fingerprint for f in self.kept}
        out = []
        for e in self.expired:
            left = sum(1 for f in e.findings if f.fingerprint in kept)
            out.append(f"waiver expired: {e.waiver.describe()}; no longer covers {left} "
                       "finding(s)" if left else
                       f"waiver expired: {e.waiver.describe()}; a renewed waiver covers its "
                       "finding(s), remove this entry")
        out += [f"waiver stale (matches nothing): {w.describe()}" for w in self.stale]
        out += [f"waiver expiring soon: {w.describe()}" for w in self.expiring]
        return out


def apply_waivers(findings: Iterable[Finding], waivers: Sequence[Waiver],
                  today: dt.date) -> WaiverReport:
    """Split findings into kept and suppressed; report expired, stale and expiring waivers.

    The first waiver in force (in file order) covers a finding. ``expired`` lists lapsed
    waivers that would have matched; ``uncovered_expired`` those that leave a finding kept.
    """
    waivers = tuple(waivers)
    # Index by the name a waiver gives: each finding costs a few dict probes, not a full scan.
    by_name: dict[str, list[int]] = {}
    for i, waiver in enumerate(waivers):
        by_name.setdefault(waiver.id.casefold(), []).append(i)
    kept: list[Finding] = []
    suppressed: list[Suppressed] = []
    hits: dict[int, list[Finding]] = {i: [] for i in range(len(waivers))}
    for finding in findings:
        active: Waiver | None = None
        for i in sorted({i for name in _names(finding) for i in by_name.get(name, ())}):
            waiver = waivers[i]
            if waiver.matches(finding):
                hits[i].append(finding)
                if active is None and not waiver.expired(today):
                    active = waiver
        if active is None:
            kept.append(finding)
        else:
            suppressed.append(Suppressed(finding, active))
    expired = tuple(ExpiredWaiver(w, tuple(hits[i])) for i, w in enumerate(waivers)
                    if w.expired(today) and hits[i])
    stale = tuple(w for i, w in enumerate(waivers) if not hits[i])
    horizon = today + dt.timedelta(days=EXPIRY_WARNING_DAYS)
    expiring = tuple(w for w in waivers if not w.expired(today) and w.expires <= horizon)
    return WaiverReport(tuple(kept), tuple(suppressed), expired, stale, expiring, today)


def load_waivers(path: Path) -> tuple[Waiver, ...]:
    """Read and validate a waivers file; ConfigError names the file and the bad entry."""
    text = read_text_file(path, "waivers file")
    doc = parse_yaml(text, str(path))
    check_finite(doc, str(path))
    if doc is None:
        return ()
    entries = doc.get("waivers") if isinstance(doc, Mapping) else doc
    if isinstance(doc, Mapping) and set(doc) - {"waivers"}:
        extra = sorted(set(doc) - {"waivers"})[0]
        raise ConfigError(f"{path}: unknown top-level key '{extra}' (expected 'waivers')")
    if entries is None:
        return ()
    if not isinstance(entries, list):
        raise ConfigError(f"{path}: 'waivers' must be a list of waivers")
    waivers = tuple(_waiver(path, i, entry) for i, entry in enumerate(entries))
    seen: dict[tuple[str, Scope, str | None], int] = {}
    for w in waivers:
        key = (w.id.casefold(), w.scope, w.scanner)
        if key in seen:
            raise ConfigError(f"{path}: waivers[{w.entry}]: duplicates waivers[{seen[key]}] "
                              f"(waiver {w.id})")
        seen[key] = w.entry
    return waivers


def _waiver(path: Path, index: int, entry: Any) -> Waiver:
    label = f"{path}: waivers[{index}]"
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{label}: must be a mapping with id, a scope, owner, reason, expires")
    wid = entry.get("id")
    named = f" (waiver {wid.strip()})" if isinstance(wid, str) and wid.strip() else ""
    unknown = sorted(str(k) for k in entry if k not in KNOWN_KEYS)
    if unknown:
        raise ConfigError(f"{label}: unknown key '{unknown[0]}' (expected: "
                          f"{', '.join(sorted(KNOWN_KEYS))}){named}")
    for key in REQUIRED:
        value = entry.get(key)
        if value is None or (isinstance(value, str) and not value.strip()):
            raise ConfigError(f"{label}: missing required key '{key}'{named} (every waiver "
                              "needs an id, a scope, an owner, a reason and an expiry date)")
    for key in ("id", "owner", "reason"):
        if not isinstance(entry[key], str):
            raise ConfigError(f"{label}: '{key}' must be a string{named}")
    scopes = [k for k in SCOPES if entry.get(k) is not None]
    if len(scopes) != 1:
        got = " and ".join(scopes) if scopes else "none"
        raise ConfigError(f"{label}: needs exactly one scope of package, path or image "
                          f"(got {got}){named}")
    value = entry[scopes[0]]
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{label}: '{scopes[0]}' must be a non-empty string{named}")
    scanner = entry.get("scanner")
    if scanner is not None and scanner not in SCANNER_NAMES:
        raise ConfigError(f"{label}: 'scanner' must be one of {', '.join(SCANNER_NAMES)}, "
                          f"got {scanner!r}{named}")
    return Waiver(id=str(entry["id"]).strip(), scope=Scope(scopes[0], value.strip()),
                  owner=entry["owner"].strip(),
                  reason=entry["reason"].strip(), expires=_date(label, entry["expires"], named),
                  scanner=scanner, entry=index, source=str(path))


def _date(label: str, value: Any, named: str) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise ConfigError(f"{label}: 'expires' must be a date YYYY-MM-DD, got {value!r}{named}")


def configured_waivers(config: Config) -> tuple[Waiver, ...] | None:
    """The waivers file's entries (None if none is configured); ConfigError if it is malformed."""
    path = config.section("scan")["waivers"]
    return load_waivers(config.resolve(str(path))) if path else None
