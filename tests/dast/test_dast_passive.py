"""Passive checks on single responses, under ZAP's conditions and plugin ids."""

from __future__ import annotations

from ci_ml.dast.http import Exchange
from ci_ml.dast.interface import Risk
from ci_ml.dast.passive import check

HARDENED = (("Content-Type", "text/html"), ("X-Content-Type-Options", "nosniff"),
            ("X-Frame-Options", "DENY"), ("Content-Security-Policy", "default-src 'none'"),
            ("Permissions-Policy", "camera=()"), ("Cross-Origin-Resource-Policy", "same-origin"),
            ("Server", "ci-ml"))


def ex(status: int = 200, headers: tuple[tuple[str, str], ...] = HARDENED,
       body: bytes = b"<html></html>", method: str = "GET") -> Exchange:
    return Exchange(method=method, url="http://t/x", path="/x", status=status, reason="OK",
                    headers=headers, body=body)


def ids(exchange: Exchange, https: bool = False) -> set[str]:
    return {a.plugin_id for a in check(exchange, https)}


def without(*names: str) -> tuple[tuple[str, str], ...]:
    return tuple(h for h in HARDENED if h[0] not in names)


def test_hardened_html_raises_nothing() -> None:
    assert ids(ex()) == set()


def test_missing_headers_on_html() -> None:
    # Without X-Frame-Options, only a CSP frame-ancestors directive protects against framing.
    assert ids(ex(headers=without("X-Frame-Options"))) == {"10020"}
    framed = without("X-Frame-Options", "Content-Security-Policy") + (
        ("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'"),)
    assert ids(ex(headers=framed)) == set()
    assert "10038" in ids(ex(headers=without("Content-Security-Policy")))
    assert ids(ex(headers=without("X-Content-Type-Options"))) == {"10021"}
    assert ids(ex(headers=without("Permissions-Policy"))) == {"10063"}
    assert ids(ex(headers=without("Cross-Origin-Resource-Policy"))) == {"90004"}


def test_html_only_rules_ignore_json() -> None:
    json_headers = (("Content-Type", "application/json"),) + without("Content-Type",
                                                                     "X-Frame-Options",
                                                                     "Content-Security-Policy",
                                                                     "Permissions-Policy")
    assert ids(ex(headers=json_headers, body=b"{}")) == set()


def test_10021_skips_error_responses_like_zap() -> None:
    assert ids(ex(status=404, headers=without("X-Content-Type-Options"))) == set()


def test_version_banners() -> None:
    assert ids(ex(headers=without("Server") + (("Server", "nginx"),))) == set()
    alerts = check(ex(headers=without("Server") + (("Server", "nginx/1.25.3"),
                                                   ("X-Powered-By", "PHP/8.1"))), False)
    assert {(a.plugin_id, a.evidence) for a in alerts} == {("10036", "nginx/1.25.3"),
                                                          ("10037", "PHP/8.1")}


def test_cookies_and_cors() -> None:
    headers = HARDENED + (("Set-Cookie", "sid=1; Path=/"), ("Set-Cookie", "a=2; HttpOnly; "
                          "SameSite=None"), ("Access-Control-Allow-Origin", "*"))
    alerts = check(ex(headers=headers), https=True)
    got = {(a.plugin_id, a.param, a.alert_ref) for a in alerts}
    assert ("10010", "sid", "10010") in got and ("10010", "a", "10010") not in got
    assert ("10054", "sid", "10054-1") in got and ("10054", "a", "10054-2") in got
    assert ("10011", "sid", "10011") in got and ("10011", "a", "10011") in got
    assert ("10035", "", "10035-1") in got          # HTTPS without HSTS
    assert ("10098", "", "10098") in got


def test_error_disclosure() -> None:
    trace = b'Traceback (most recent call last):\n  File "/app/x.py", line 3, in f\nValueError'
    alerts = check(ex(status=500, headers=(("Content-Type", "text/plain"),), body=trace), False)
    leak = [a for a in alerts if a.plugin_id == "90022"]
    assert leak and leak[0].risk is Risk.MEDIUM and "Traceback" in leak[0].evidence
    bare = check(ex(status=500, headers=(("Content-Type", "application/json"),),
                    body=b'{"error": "internal error"}'), False)
    assert [(a.plugin_id, a.risk) for a in bare] == [("90022", Risk.LOW)]
    banner = check(ex(status=404, headers=(("Content-Type", "text/html"),),
                      body=b"<hr>Apache/2.4.41 (Ubuntu) Server"), False)
    assert "10009" in {a.plugin_id for a in banner}
