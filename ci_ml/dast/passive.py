"""Passive checks: what every response says about the server, under ZAP's plugin ids.

The conditions follow ZAP's passive rules at their default threshold (e.g. 10021
skips 3xx/4xx/5xx responses, 10020/10038/10063 look at HTML only, 10035/10011 at
HTTPS only). One difference, on purpose: a stack trace in a 500 response is
reported as 90022 at medium risk (ZAP reports any 500 at low and stops there).
"""

from __future__ import annotations

import re

from ci_ml.dast.catalog import rule
from ci_ml.dast.http import Exchange
from ci_ml.dast.interface import Alert, Risk

# Error and stack-trace signatures of common stacks (ZAP keeps its own in application_errors.xml).
ERROR_PATTERNS: tuple[re.Pattern[str], ...] = tuple(re.compile(p) for p in (
    r"Traceback \(most recent call last\)",
    r"File \"[^\"]+\", line \d+, in \w+",
    r"\b\w*(Error|Exception): .{0,80}\n\s*at ",
    r"Exception in thread \"",
    r"\bat [\w$.]+\([\w$]+\.java:\d+\)",
    r"goroutine \d+ \[running\]",
    r"panicked at '",
    r"System\.\w+Exception",
    r"\bat \S+ \((?:node:)?internal/[\w/]+\.js:\d+:\d+\)",
    r"(?:Fatal error|Parse error|Warning): .{0,120} on line \d+",
    r"onnxruntime\.capi\.\w+",
    r"\bORA-\d{5}\b",
    r"SQLSTATE\[",
))
BANNER = re.compile(r"\b(Apache|nginx|Jetty|Apache-Coyote|Tomcat|Werkzeug|BaseHTTP|Python|"
                    r"gunicorn|uvicorn|Microsoft-IIS|lighttpd|Express|Kestrel)/\d[\w.]*")
CSP_HEADERS = ("Content-Security-Policy", "X-Content-Security-Policy", "X-WebKit-CSP")


def error_evidence(text: str) -> str | None:
    for pattern in ERROR_PATTERNS:
        match = pattern.search(text)
        if match:
            return match.group(0)
    return None


def check(ex: Exchange, https: bool) -> list[Alert]:
    """Every passive alert one response raises."""
    if not ex.answered or ex.status is None:
        return []
    alerts: list[Alert] = []
    url, method, status = ex.url, ex.method, ex.status
    ok = 200 <= status < 300
    error_or_redirect = status >= 300
    has_body = bool(ex.body)
    html = ex.is_html

    def add(plugin: str, **kw: object) -> None:
        alerts.append(rule(plugin).alert(url, method=method, **kw))  # type: ignore[arg-type]

    if has_body and not error_or_redirect:
        xcto = ex.header_values("X-Content-Type-Options")
        if not xcto:
            add("10021", param="x-content-type-options")
        elif not any("nosniff" in v.lower() for v in xcto):
            add("10021", param="x-content-type-options", evidence=xcto[0])
    if html and ok:
        csp = " ".join(v for h in CSP_HEADERS for v in ex.header_values(h))
        if not ex.header_values("X-Frame-Options") and "frame-ancestors" not in csp.lower():
            add("10020", param="x-frame-options", alert_ref="10020-1")
        if not csp:
            add("10038", alert_ref="10038-1")
        if not (ex.header("Permissions-Policy") or ex.header("Feature-Policy")):
            add("10063", alert_ref="10063-1")
    if https and ok and not ex.header("Strict-Transport-Security"):
        add("10035", alert_ref="10035-1")
    server = ex.header("Server")
    if server and re.search(r"\d", server):
        add("10036", evidence=server)
    for powered in ex.header_values("X-Powered-By"):
        add("10037", evidence=powered)
    if (ex.header("Access-Control-Allow-Origin") or "").strip() == "*":
        add("10098", evidence="Access-Control-Allow-Origin: *")
    if ok and has_body and not ex.header("Cross-Origin-Resource-Policy"):
        add("90004", param="Cross-Origin-Resource-Policy", alert_ref="90004-1")
    if has_body and not ex.header("Content-Type"):
        add("10019")
    for cookie in ex.header_values("Set-Cookie"):
        name = cookie.split("=", 1)[0].strip()
        attrs = [a.strip().lower() for a in cookie.split(";")[1:]]
        if "httponly" not in attrs:
            add("10010", param=name, evidence=cookie[:120])
        if https and "secure" not in attrs:
            add("10011", param=name, evidence=cookie[:120])
        samesite = next((a.split("=", 1)[1].strip() for a in attrs if a.startswith("samesite=")),
                        None)
        if samesite is None:
            add("10054", param=name, evidence=cookie[:120], alert_ref="10054-1")
        elif samesite == "none":
            add("10054", param=name, evidence=cookie[:120], alert_ref="10054-2")
    alerts.extend(error_disclosure(ex))
    text = ex.text if has_body else ""
    if status >= 400 and text:
        banner = BANNER.search(text)
        if banner:
            add("10009", evidence=banner.group(0))
    return alerts


def error_disclosure(ex: Exchange) -> list[Alert]:
    """90022 alone: a stack trace or error text in any answer, or a bare 500 (low)."""
    if not ex.answered:
        return []
    evidence = error_evidence(ex.text) if ex.body else None
    if evidence:
        return [rule("90022").alert(ex.url, method=ex.method, evidence=evidence)]
    if ex.status == 500:
        return [rule("90022").alert(ex.url, method=ex.method, evidence=ex.status_line,
                                    risk=Risk.LOW)]
    return []
