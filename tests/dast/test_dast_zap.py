"""The ZAP adapter against recorded ZAP API answers and a recorded traditional-json report.

No ZAP daemon runs here: FakeZap answers zapv2's proxied API calls from the recorded files,
so everything from zapv2 inward (the real client, our engine, the parsing) is exercised.
"""

from __future__ import annotations

import json

import pytest

from ci_ml.dast.findings import findings_from
from ci_ml.dast.interface import DastError, DastOptions, DastTarget
from ci_ml.dast.rules import Rules
from ci_ml.dast.zap import ZapEngine, ZapReportEngine, alerts_from_report
from ci_ml.scan.interface import Severity
from tests.conftest import FIXTURES

REPORT = FIXTURES / "recorded" / "zap" / "report_json.json"
TARGET = DastTarget(url="http://127.0.0.1:8000",
                    openapi_url="http://127.0.0.1:8000/openapi.json")
KEY = "s3cr3t-zap-key-for-tests"


def summary(findings):  # type: ignore[no-untyped-def]
    return sorted((f.id, f.location.url, f.raw["method"], f.raw["param"], f.severity.label,
                   f.raw["evidence"]) for f in findings)


def test_full_scan_follows_zaps_order(fake_zap) -> None:  # type: ignore[no-untyped-def]
    engine = ZapEngine(fake_zap.url, api_key=KEY, poll_s=0.01)
    report = engine.scan(TARGET, DastOptions(active=True))
    names = fake_zap.names()
    assert names[0] == "core_view_version"
    order = ["openapi_action_importUrl", "spider_action_scan", "spider_view_status",
             "pscan_view_recordsToScan", "ascan_action_scan", "ascan_view_status",
             "core_view_alerts"]
    assert [n for n in names if n in order] == sorted(
        [n for n in names if n in order], key=order.index)
    assert names.count("spider_view_status") == 2 and names.count("ascan_view_status") == 2
    calls = dict(fake_zap.calls)
    assert calls["openapi_action_importUrl"]["url"] == TARGET.openapi_url
    assert calls["spider_action_scan"]["url"] == TARGET.url
    assert calls["core_view_alerts"]["baseurl"] == TARGET.url
    assert set(fake_zap.keys_seen) == {KEY}                     # the key went in the header
    assert fake_zap.proxied == [TARGET.url + "/"]               # zapv2 urlopen of the target
    assert report.engine_version == "ZAP 2.16.1" and len(report.alerts) == 15


def test_passive_only_skips_the_active_scan(fake_zap) -> None:  # type: ignore[no-untyped-def]
    ZapEngine(fake_zap.url, api_key=KEY, poll_s=0.01).scan(TARGET, DastOptions(active=False))
    assert "ascan_action_scan" not in fake_zap.names()


def test_api_and_report_give_the_same_findings(fake_zap) -> None:  # type: ignore[no-untyped-def]
    from_api = ZapEngine(fake_zap.url, api_key=KEY, poll_s=0.01).scan(TARGET, DastOptions())
    from_report = ZapReportEngine(REPORT).scan(TARGET, DastOptions())
    api_findings = findings_from(from_api, Rules())
    assert summary(api_findings) == summary(findings_from(from_report, Rules()))
    ids = {f.id for f in api_findings}
    assert "10096" not in ids                                   # marked a false positive
    csp = next(f for f in api_findings if f.id == "10038")
    assert csp.severity is Severity.MEDIUM and csp.raw["alertRef"] == "10038-1"
    assert csp.aliases == ("CWE-693",) and csp.raw["engine"] == "zap"
    assert csp.raw["solution"].startswith("Ensure that your web server")
    assert "https://cheatsheetseries.owasp.org/" in " ".join(csp.references)
    info = next(f for f in api_findings if f.id == "10049")
    assert info.severity is Severity.INFO


def test_rules_file_applies_to_zap_alerts(fake_zap) -> None:  # type: ignore[no-untyped-def]
    report = ZapEngine(fake_zap.url, api_key=KEY, poll_s=0.01).scan(TARGET, DastOptions())
    rules = Rules.parse("10021\tIGNORE\t\n10037\tFAIL\t\n")
    found = {f.id: f for f in findings_from(report, rules)}
    assert "10021" not in found and found["10037"].severity is Severity.HIGH


def test_wrong_key_is_reported_without_the_key(fake_zap) -> None:  # type: ignore[no-untyped-def]
    engine = ZapEngine(fake_zap.url, api_key="wrong-key-123", key_env="ZAP_API_KEY")
    with pytest.raises(DastError) as err:
        engine.scan(TARGET, DastOptions())
    assert "bad_api_key" in err.value.message and "$ZAP_API_KEY" in err.value.message
    assert "wrong-key-123" not in err.value.message


def test_no_daemon_is_an_error() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DastError, match="unreachable.*is a ZAP daemon running"):
        ZapEngine(f"http://127.0.0.1:{port}", api_key=KEY).version()


def test_report_parsing_rejects_other_json(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(DastError, match="not a ZAP traditional-json report"):
        alerts_from_report({"alerts": []})
    broken = json.loads(REPORT.read_text())
    del broken["site"][0]["alerts"][0]["riskcode"]
    with pytest.raises(DastError, match="malformed alert"):
        alerts_from_report(broken)
