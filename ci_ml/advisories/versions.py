"""OSV affected-version matching for PyPI: ECOSYSTEM ranges with PEP 440 ordering,
plus the record's explicit ``versions`` list (GIT ranges need a commit, not a version)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from packaging.version import InvalidVersion, Version


def parse_version(text: str) -> Version | None:
    try:
        return Version(str(text))
    except InvalidVersion:
        return None


def _event_key(event: Mapping[str, Any]) -> tuple[int, Version | None]:
    value = next(iter(event.values()), "0")
    if "introduced" in event and str(value) == "0":
        return (0, None)
    return (1, parse_version(str(value)))


def in_ecosystem_range(version: Version, events: Sequence[Mapping[str, Any]]) -> bool:
    """Whether ``version`` lies in an OSV ECOSYSTEM range.

    Follows the OSV spec's evaluation: walk the events in version order; an
    ``introduced`` at or below the version opens an affected interval, a
    ``fixed`` at or below it (or a ``last_affected`` below it) closes it, and a
    ``limit`` at or below it ends the range. Events whose version does not parse
    under PEP 440 are ignored (the explicit ``versions`` list still applies).
    """
    keyed = [(k, e) for e in events if (k := _event_key(e))[0] == 0 or k[1] is not None]
    keyed.sort(key=lambda item: (item[0][0], item[0][1] or Version("0")))
    affected = False
    for (_, bound), event in keyed:
        if "introduced" in event:
            if bound is None or version >= bound:
                affected = True
        elif "fixed" in event:
            if bound is not None and version >= bound:
                affected = False
        elif "last_affected" in event:
            if bound is not None and version > bound:
                affected = False
        elif "limit" in event and bound is not None and version >= bound:
            return False
    return affected


def in_versions_list(version: str, parsed: Version | None, listed: Sequence[Any]) -> bool:
    for item in listed:
        text = str(item)
        if text == version:
            return True
        if parsed is not None and (other := parse_version(text)) is not None and other == parsed:
            return True
    return False


def affected_entry_matches(entry: Mapping[str, Any], version: str) -> bool:
    """Whether one ``affected[]`` entry of a record covers ``version``."""
    parsed = parse_version(version)
    if in_versions_list(version, parsed, entry.get("versions") or ()):
        return True
    if parsed is None:
        return False
    for rng in entry.get("ranges") or ():
        if str(rng.get("type", "")).upper() == "ECOSYSTEM" and in_ecosystem_range(
                parsed, rng.get("events") or ()):
            return True
    return False


def fixed_versions(entry: Mapping[str, Any]) -> list[str]:
    """Every ``fixed`` version of the entry's ECOSYSTEM ranges, in PEP 440 order."""
    fixed = [str(e["fixed"]) for rng in entry.get("ranges") or ()
             if str(rng.get("type", "")).upper() == "ECOSYSTEM"
             for e in rng.get("events") or () if "fixed" in e]
    return sorted(set(fixed), key=lambda v: (parse_version(v) is None, parse_version(v) or v))


def first_fix_after(entry: Mapping[str, Any], version: str) -> str | None:
    """The lowest fixed version above ``version`` (the upgrade that closes the advisory)."""
    parsed = parse_version(version)
    for fix in fixed_versions(entry):
        candidate = parse_version(fix)
        if candidate is not None and (parsed is None or candidate > parsed):
            return fix
    return None
