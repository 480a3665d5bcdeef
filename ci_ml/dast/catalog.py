"""The built-in engine's rules, under ZAP's plugin ids (ZAP's registry: docs/scanners.md).

Ids 190001-190006 are ci-ml's own checks for model endpoints, which ZAP has no
rule for; they sit outside ZAP's registered ranges so a rules file can name them.
"""

from __future__ import annotations

from dataclasses import dataclass

from ci_ml.dast.interface import Alert, AlertConfidence, Risk


@dataclass(frozen=True)
class RuleInfo:
    plugin_id: str
    name: str
    risk: Risk
    confidence: AlertConfidence
    cwe: int
    wasc: int
    description: str
    solution: str
    reference: str = ""
    passive: bool = True

    def alert(self, url: str, *, method: str = "GET", param: str = "", attack: str = "",
              evidence: str = "", alert_ref: str = "", other: str = "",
              risk: Risk | None = None) -> Alert:
        return Alert(plugin_id=self.plugin_id, name=self.name,
                     risk=self.risk if risk is None else risk, confidence=self.confidence,
                     url=url, method=method, param=param, attack=attack[:500],
                     evidence=evidence[:500], alert_ref=alert_ref or self.plugin_id,
                     description=self.description, solution=self.solution,
                     reference=self.reference, other=other, cwe=self.cwe, wasc=self.wasc)


_OWASP_HEADERS = "https://owasp.org/www-project-secure-headers/"
C = AlertConfidence

RULES: dict[str, RuleInfo] = {r.plugin_id: r for r in (
    # -- passive ------------------------------------------------------------------------------
    RuleInfo("10020", "Missing Anti-clickjacking Header", Risk.MEDIUM, C.MEDIUM, 1021, 15,
             "An HTML response sets neither X-Frame-Options nor a Content-Security-Policy "
             "frame-ancestors directive, so other sites can frame it (clickjacking).",
             "Send 'Content-Security-Policy: frame-ancestors' or 'X-Frame-Options: DENY' on every "
             "page.", "https://developer.mozilla.org/en-US/docs/Web/HTTP/Headers/X-Frame-Options"),
    RuleInfo("10021", "X-Content-Type-Options Header Missing", Risk.LOW, C.MEDIUM, 693, 15,
             "The response does not set 'X-Content-Type-Options: nosniff', so browsers may "
             "MIME-sniff it into another content type.",
             "Send 'X-Content-Type-Options: nosniff' on every response.", _OWASP_HEADERS),
    RuleInfo("10035", "Strict-Transport-Security Header Not Set", Risk.LOW, C.HIGH, 319, 15,
             "An HTTPS response does not set Strict-Transport-Security, so a browser may later "
             "reach the site over plain HTTP.",
             "Send 'Strict-Transport-Security: max-age=31536000' on HTTPS responses.",
             "https://cheatsheetseries.owasp.org/cheatsheets/HTTP_Strict_Transport_Security_Cheat_Sheet.html"),
    RuleInfo("10036", "Server Leaks Version Information via \"Server\" HTTP Response Header Field",
             Risk.LOW, C.HIGH, 497, 13,
             "The Server header names the server software and its version, which helps an "
             "attacker pick known vulnerabilities.",
             "Send a generic Server header (or none) without version numbers.",
             "https://httpd.apache.org/docs/current/mod/core.html#servertokens"),
    RuleInfo("10037", "Server Leaks Information via \"X-Powered-By\" HTTP Response Header "
             "Field(s)", Risk.LOW, C.MEDIUM, 497, 13,
             "X-Powered-By reveals the frameworks behind the application.",
             "Do not send X-Powered-By headers.", _OWASP_HEADERS),
    RuleInfo("10038", "Content Security Policy (CSP) Header Not Set", Risk.MEDIUM, C.HIGH, 693, 15,
             "An HTML response has no Content-Security-Policy, the main defence in depth "
             "against cross-site scripting and data injection.",
             "Send a Content-Security-Policy header (for an API: default-src 'none').",
             "https://developer.mozilla.org/en-US/docs/Web/HTTP/CSP"),
    RuleInfo("10010", "Cookie No HttpOnly Flag", Risk.LOW, C.MEDIUM, 1004, 13,
             "A cookie is set without HttpOnly, so script running in the page can read it.",
             "Set the HttpOnly flag on every cookie that script does not need.",
             "https://owasp.org/www-community/HttpOnly"),
    RuleInfo("10011", "Cookie Without Secure Flag", Risk.LOW, C.MEDIUM, 614, 13,
             "A cookie set over HTTPS lacks the Secure flag and may be sent over plain HTTP.",
             "Set the Secure flag on cookies served over HTTPS.",
             "https://owasp.org/www-project-web-security-testing-guide/"),
    RuleInfo("10054", "Cookie without SameSite Attribute", Risk.LOW, C.MEDIUM, 1275, 13,
             "A cookie is set without SameSite (or with SameSite=None), so it is sent with "
             "cross-site requests (CSRF).",
             "Set 'SameSite=Lax' or 'SameSite=Strict' on every cookie.",
             "https://tools.ietf.org/html/draft-ietf-httpbis-cookie-same-site"),
    RuleInfo("10098", "Cross-Domain Misconfiguration", Risk.MEDIUM, C.MEDIUM, 264, 14,
             "'Access-Control-Allow-Origin: *' lets any web site read this endpoint's responses "
             "from a victim's browser.",
             "Allow only the origins that need access, or send no CORS headers.",
             "https://developer.mozilla.org/en-US/docs/Web/HTTP/CORS"),
    RuleInfo("90022", "Application Error Disclosure", Risk.MEDIUM, C.MEDIUM, 550, 13,
             "The response contains an error message or stack trace that reveals the "
             "application's internals (file paths, code, library versions).",
             "Answer errors with a generic message; log the details on the server only.",
             "https://owasp.org/www-community/Improper_Error_Handling"),
    RuleInfo("10009", "In Page Banner Information Leak", Risk.LOW, C.HIGH, 497, 13,
             "An error page names the server software and its version.",
             "Configure the server not to print its banner on error pages.",
             "https://owasp.org/www-project-web-security-testing-guide/"),
    RuleInfo("10019", "Content-Type Header Missing", Risk.INFO, C.MEDIUM, 345, 12,
             "A response with a body has no Content-Type header.",
             "Send an accurate Content-Type on every response with a body.",
             "https://developer.mozilla.org/en-US/docs/Web/HTTP/Headers/Content-Type"),
    RuleInfo("10063", "Permissions Policy Header Not Set", Risk.LOW, C.MEDIUM, 693, 15,
             "An HTML response has no Permissions-Policy to restrict powerful browser features.",
             "Send a Permissions-Policy header.",
             "https://developer.mozilla.org/en-US/docs/Web/HTTP/Headers/Permissions-Policy"),
    RuleInfo("90004", "Insufficient Site Isolation Against Spectre Vulnerability", Risk.LOW,
             C.MEDIUM, 693, 14,
             "The response lacks Cross-Origin-Resource-Policy, so other origins can load it "
             "into their process (side-channel attacks).",
             "Send 'Cross-Origin-Resource-Policy: same-origin'.",
             "https://developer.mozilla.org/en-US/docs/Web/HTTP/Cross-Origin_Resource_Policy"),
    # -- active -------------------------------------------------------------------------------
    RuleInfo("40008", "Parameter Tampering", Risk.MEDIUM, C.MEDIUM, 472, 20,
             "A tampered request (malformed JSON, wrong types or shapes) made the server fail "
             "with a 5xx error instead of rejecting it: input is not validated before use.",
             "Validate every request against the model's signature and answer 4xx for bad "
             "input; never let an exception escape as a 500.",
             "https://owasp.org/www-project-top-ten/", passive=False),
    RuleInfo("6", "Path Traversal", Risk.HIGH, C.MEDIUM, 22, 33,
             "A path with '../' sequences returned the contents of a file outside the served "
             "tree.", "Never map request paths onto the file system.",
             "https://owasp.org/www-community/attacks/Path_Traversal", passive=False),
    RuleInfo("40018", "SQL Injection", Risk.HIGH, C.MEDIUM, 89, 19,
             "An injected SQL fragment produced a database error in the response.",
             "Use parameterized queries; validate input types.",
             "https://cheatsheetseries.owasp.org/cheatsheets/SQL_Injection_Prevention_Cheat_Sheet.html",
             passive=False),
    RuleInfo("90020", "Remote OS Command Injection", Risk.HIGH, C.MEDIUM, 78, 31,
             "An injected shell command ran: its output appears in the response.",
             "Never pass request data to a shell.",
             "https://owasp.org/www-community/attacks/Command_Injection", passive=False),
    RuleInfo("40012", "Cross Site Scripting (Reflected)", Risk.HIGH, C.MEDIUM, 79, 8,
             "An injected script tag is reflected unescaped in an HTML response.",
             "Escape output; answer with application/json and nosniff.",
             "https://owasp.org/www-community/attacks/xss/", passive=False),
    RuleInfo("90028", "Insecure HTTP Method", Risk.MEDIUM, C.MEDIUM, 749, 45,
             "The server accepts TRACE and echoes the request back (cross-site tracing).",
             "Answer TRACE (and any method the API does not use) with 405.",
             "https://owasp.org/www-community/attacks/Cross_Site_Tracing", passive=False),
    RuleInfo("190001", "Endpoint Crashed", Risk.HIGH, C.HIGH, 248, 10,
             "After this request the endpoint stopped answering: one malformed request takes "
             "the model service down (denial of service).",
             "Validate input before inference and catch errors per request; the process must "
             "survive any request.", "https://cwe.mitre.org/data/definitions/248.html",
             passive=False),
    RuleInfo("190002", "Request Hang", Risk.MEDIUM, C.MEDIUM, 400, 10,
             "The endpoint did not answer this request within the timeout while staying up for "
             "others: a few such requests exhaust its workers.",
             "Bound request size and inference time; time out slow clients.",
             "https://cwe.mitre.org/data/definitions/400.html", passive=False),
    RuleInfo("190003", "Non-finite Model Input Accepted", Risk.LOW, C.HIGH, 20, 20,
             "The endpoint answered 2xx to NaN or Infinity inputs: the model scored garbage "
             "and the caller got a confident-looking prediction.",
             "Reject non-finite numbers (422) before inference.",
             "https://cwe.mitre.org/data/definitions/20.html", passive=False),
    RuleInfo("190004", "Malformed Model Input Accepted", Risk.LOW, C.HIGH, 20, 20,
             "The endpoint answered 2xx to an input of the wrong type or shape.",
             "Validate shape and dtype against the model's signature.",
             "https://cwe.mitre.org/data/definitions/20.html", passive=False),
    RuleInfo("190006", "HTTP Request Desync", Risk.HIGH, C.MEDIUM, 444, 26,
             "The server does not frame requests as RFC 9112 says: it answered the body of a "
             "request as a request of its own, or kept a connection open after a request whose "
             "length was ambiguous (Content-Length with Transfer-Encoding, two lengths), or took "
             "an obs-fold continuation line for a header. Behind a keep-alive proxy or ingress "
             "that frames the same bytes differently, one client can smuggle a request into "
             "another client's connection (request smuggling).",
             "Serve through a maintained HTTP parser that consumes every body by its framing "
             "(also when the request is refused) and answers ambiguous framing, obs-fold and "
             "invalid lengths with 400 and a closed connection.",
             "https://www.rfc-editor.org/rfc/rfc9112#section-6.3", passive=False),
    RuleInfo("190005", "No Request Size Limit", Risk.MEDIUM, C.MEDIUM, 770, 10,
             "The endpoint accepted a batch or body larger than its declared limit (or "
             "any size, when none is declared): one request can exhaust memory and CPU.",
             "Cap the body size and the batch size, and declare them (OpenAPI maxItems).",
             "https://cwe.mitre.org/data/definitions/770.html", passive=False),
)}


def rule(plugin_id: str) -> RuleInfo:
    return RULES[plugin_id]
