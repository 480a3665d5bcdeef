"""Waivers: a finding accepted for a while, with a scope, an owner, a reason and an expiry.

MINIMAL STAND-IN written on the ``gate`` branch against the agreed contract so the
gate can be built and tested; the scan developer's module replaces this one.

Contract: frozen ``Waiver``, ``load_waivers(path)``, and pure
``apply_waivers(findings, waivers, today) -> WaiverReport``. A waiver is in force
through its ``expires`` date (inclusive) and lapses the day after.
"""

from __future__ import annotations

import datetime
import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ci_ml.errors import InputError
from ci_ml.scan.interface import Finding

EXPIRING_SOON_DAYS = 14


@dataclass(frozen=True)
class Waiver:
    id: str                     # the finding id, rule or alias it accepts (B602, PYSEC-...)
    package: str | None
    path: str | None            # a glob over the finding's path
    image: str | None
    owner: str
    reason: str
    expires: datetime.date

    def in_force(self, today: datetime.date) -> bool:
        return today <= self.expires

    def matches(self, finding: Finding) -> bool:
        if self.id != finding.id and self.id != finding.rule and self.id not in finding.aliases:
            return False
        loc = finding.location
        if self.package is not None and self.package != loc.package:
            return False
        if self.path is not None and (loc.path is None or not fnmatch.fnmatchcase(loc.path,
                                                                                self.path)):
            return False
        return self.image is None or self.image == loc.image

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "package": self.package, "path": self.path, "image": self.image,
                "owner": self.owner, "reason": self.reason, "expires": self.expires.isoformat()}


@dataclass(frozen=True)
class WaiverReport:
    kept: tuple[Finding, ...]
    suppressed: tuple[tuple[Finding, Waiver], ...]
    expired: tuple[Waiver, ...]        # lapsed waivers that would have matched a finding
    stale: tuple[Waiver, ...]          # waivers that match no finding at all
    expiring_soon: tuple[Waiver, ...]  # in force, lapsing within EXPIRING_SOON_DAYS


def _field(entry: Mapping[str, Any], key: str, where: str, required: bool = True) -> str | None:
    value = entry.get(key)
    if value is None:
        if required:
            raise InputError(f"{where}: missing required key '{key}'")
        return None
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{where}.{key}: expected a non-empty string, got {value!r}")
    return value.strip()


def load_waivers(path: Path) -> tuple[Waiver, ...]:
    try:
        doc = yaml.safe_load(path.read_text("utf-8"))
    except FileNotFoundError as exc:
        raise InputError(f"{path}: waivers file not found") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read waivers file: {exc}") from exc
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: YAML syntax error in waivers file") from exc
    if doc is None:
        return ()
    entries = doc.get("waivers") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        raise InputError(f"{path}: expected a mapping with a 'waivers' list")
    out = []
    for i, entry in enumerate(entries):
        where = f"{path}: waivers[{i}]"
        if not isinstance(entry, dict):
            raise InputError(f"{where}: expected a mapping")
        expires = entry.get("expires")
        if isinstance(expires, str):
            try:
                expires = datetime.date.fromisoformat(expires)
            except ValueError as exc:
                raise InputError(f"{where}.expires: not a date (YYYY-MM-DD): {expires!r}") from exc
        if isinstance(expires, datetime.datetime):
            expires = expires.date()
        if not isinstance(expires, datetime.date):
            raise InputError(f"{where}.expires: expected a date (YYYY-MM-DD), got {expires!r}")
        out.append(Waiver(
            id=str(_field(entry, "id", where)), package=_field(entry, "package", where, False),
            path=_field(entry, "path", where, False), image=_field(entry, "image", where, False),
            owner=str(_field(entry, "owner", where)), reason=str(_field(entry, "reason", where)),
            expires=expires,
        ))
    return tuple(out)


def apply_waivers(findings: Iterable[Finding], waivers: Iterable[Waiver],
                  today: datetime.date) -> WaiverReport:
    waivers = tuple(waivers)
    # Index by the id a waiver names, so 50,000 findings cost one dict probe each, not a scan.
    by_key: dict[str, list[Waiver]] = {}
    for w in waivers:
        by_key.setdefault(w.id, []).append(w)
    kept: list[Finding] = []
    suppressed: list[tuple[Finding, Waiver]] = []
    matched: set[int] = set()
    expired: dict[int, Waiver] = {}
    for f in findings:
        candidates: list[Waiver] = []
        for key in (f.id, f.rule, *f.aliases):
            candidates.extend(by_key.get(key, ()))
        active = None
        lapsed: list[Waiver] = []
        for w in candidates:
            if w.matches(f):
                matched.add(id(w))
                if w.in_force(today):
                    active = active or w
                else:
                    lapsed.append(w)
        if active is None:
            kept.append(f)
            # Only a lapsed waiver that was this finding's last cover is news: a renewed
            # waiver beside the old entry keeps the finding accepted.
            expired.update((id(w), w) for w in lapsed)
        else:
            suppressed.append((f, active))
    soon = today + datetime.timedelta(days=EXPIRING_SOON_DAYS)
    return WaiverReport(
        kept=tuple(kept), suppressed=tuple(suppressed),
        expired=tuple(w for w in waivers if id(w) in expired),
        stale=tuple(w for w in waivers if id(w) not in matched),
        expiring_soon=tuple(w for w in waivers if w.in_force(today) and w.expires <= soon),
    )
