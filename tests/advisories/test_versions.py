"""OSV version matching: ECOSYSTEM ranges with PEP 440 ordering and explicit version lists."""

from __future__ import annotations

from packaging.version import Version

from ci_ml.advisories.versions import (
    affected_entry_matches,
    first_fix_after,
    fixed_versions,
    in_ecosystem_range,
)


def _range(*events: dict[str, str]) -> list[dict[str, str]]:
    return list(events)


def test_introduced_zero_to_fixed() -> None:
    events = _range({"introduced": "0"}, {"fixed": "2.20.0"})
    assert in_ecosystem_range(Version("2.19.1"), events)
    assert in_ecosystem_range(Version("0.0.1"), events)
    assert not in_ecosystem_range(Version("2.20.0"), events)
    assert not in_ecosystem_range(Version("3.0"), events)


def test_pep440_ordering_not_string_ordering() -> None:
    events = _range({"introduced": "2.3.0"}, {"fixed": "2.31.0"})
    assert in_ecosystem_range(Version("2.4.0"), events)       # "2.4.0" > "2.31.0" as strings
    assert in_ecosystem_range(Version("2.30.0"), events)
    assert not in_ecosystem_range(Version("2.2.9"), events)
    assert in_ecosystem_range(Version("2.31.0rc1"), events)   # a pre-release precedes the fix


def test_last_affected_is_inclusive() -> None:
    events = _range({"introduced": "1.0"}, {"last_affected": "1.4"})
    assert in_ecosystem_range(Version("1.4"), events)
    assert not in_ecosystem_range(Version("1.4.1"), events)


def test_several_intervals_in_one_range_and_unsorted_events() -> None:
    events = _range({"fixed": "1.2"}, {"introduced": "2.0"}, {"introduced": "1.0"},
                    {"fixed": "2.5"})
    assert in_ecosystem_range(Version("1.1"), events)
    assert not in_ecosystem_range(Version("1.5"), events)
    assert in_ecosystem_range(Version("2.4"), events)
    assert not in_ecosystem_range(Version("2.5"), events)


def test_limit_ends_the_range() -> None:
    events = _range({"introduced": "0"}, {"limit": "3.0"})
    assert in_ecosystem_range(Version("2.9"), events)
    assert not in_ecosystem_range(Version("3.1"), events)


def test_unparsable_event_versions_are_ignored() -> None:
    events = _range({"introduced": "0"}, {"fixed": "not-a-version"})
    assert in_ecosystem_range(Version("99"), events)


def test_explicit_versions_list_matches_even_outside_ranges() -> None:
    entry = {"versions": ["0.12.01", "5.3"],
             "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "6.0"}]}]}
    assert affected_entry_matches(entry, "5.3")
    assert affected_entry_matches(entry, "5.3.0")          # PEP 440 equality
    assert affected_entry_matches(entry, "0.12.01")        # exact string, too
    assert not affected_entry_matches(entry, "5.4")
    assert affected_entry_matches(entry, "6.1")


def test_git_ranges_do_not_match_versions() -> None:
    entry = {"ranges": [{"type": "GIT", "events": [{"introduced": "0"}, {"fixed": "abc123"}]}]}
    assert not affected_entry_matches(entry, "1.0")


def test_unparsable_query_version_only_matches_the_list() -> None:
    entry = {"versions": ["weird-1"],
             "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}]}]}
    assert affected_entry_matches(entry, "weird-1")
    assert not affected_entry_matches(entry, "weird-2")


def test_fixes_sorted_and_first_fix_after_version() -> None:
    entry = {"ranges": [{"type": "ECOSYSTEM",
                         "events": [{"introduced": "0"}, {"fixed": "2.10.1"},
                                    {"introduced": "2.11"}, {"fixed": "2.11.3"}]}]}
    assert fixed_versions(entry) == ["2.10.1", "2.11.3"]
    assert first_fix_after(entry, "2.10") == "2.10.1"
    assert first_fix_after(entry, "2.11.0") == "2.11.3"
    assert first_fix_after(entry, "3.0") is None
