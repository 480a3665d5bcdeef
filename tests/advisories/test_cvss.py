"""CVSS v3 base scores, checked against NVD's published scores."""

from __future__ import annotations

import pytest

from ci_ml.advisories.cvss import base_score, severity_of_score
from ci_ml.scan.interface import Severity


@pytest.mark.parametrize(("vector", "score"), [
    ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", 9.8),    # e.g. CVE-2021-44228 class
    ("CVSS:3.0/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:N/A:N", 7.5),    # CVE-2018-18074 (requests)
    ("CVSS:3.1/AV:N/AC:H/PR:N/UI:R/S:C/C:H/I:N/A:N", 6.1),    # CVE-2023-32681 (requests)
    ("CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:C/C:L/I:L/A:N", 6.1),    # reflected XSS, scope changed
    ("CVSS:3.1/AV:L/AC:L/PR:L/UI:N/S:U/C:N/I:N/A:H", 5.5),
    ("CVSS:3.1/AV:N/AC:L/PR:L/UI:N/S:C/C:H/I:H/A:H", 9.9),
    ("CVSS:3.1/AV:P/AC:H/PR:H/UI:R/S:U/C:L/I:N/A:N", 1.6),
    ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:N", 0.0),
])
def test_base_scores_match_nvd(vector: str, score: float) -> None:
    assert base_score(vector) == score


@pytest.mark.parametrize("vector", [
    "", "AV:N/AC:L/Au:N/C:P/I:P/A:P",                     # CVSS v2
    "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H",          # missing A
    "CVSS:3.1/AV:X/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",      # bad value
])
def test_invalid_vectors_have_no_score(vector: str) -> None:
    assert base_score(vector) is None


def test_qualitative_ratings() -> None:
    assert severity_of_score(9.0) is Severity.CRITICAL
    assert severity_of_score(8.9) is Severity.HIGH
    assert severity_of_score(4.0) is Severity.MEDIUM
    assert severity_of_score(0.1) is Severity.LOW
    assert severity_of_score(0.0) is Severity.INFO
