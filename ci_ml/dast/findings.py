"""Alerts (either engine) through the rules file into ci-ml's ``Finding``s.

A finding carries what the GitLab DAST report and the gate need: the URL, method,
parameter, attack and evidence, the solution, ``CWE-<n>`` in aliases, and the
rules-file action that set its severity.
"""

from __future__ import annotations

import re

from ci_ml.dast.interface import Alert, AlertConfidence, DastReport, Risk
from ci_ml.dast.rules import Action, Rules
from ci_ml.scan.interface import Confidence, Finding, Location, Severity

SCANNER = "dast"
RISK_SEVERITY = {Risk.INFO: Severity.INFO, Risk.LOW: Severity.LOW, Risk.MEDIUM: Severity.MEDIUM,
                 Risk.HIGH: Severity.HIGH}
CONFIDENCE = {AlertConfidence.LOW: Confidence.LOW, AlertConfidence.MEDIUM: Confidence.MEDIUM,
              AlertConfidence.HIGH: Confidence.HIGH, AlertConfidence.CONFIRMED: Confidence.HIGH}
_URL = re.compile(r"https?://[^\s<>\"']+")
_TAGS = re.compile(r"</?p>|<br\s*/?>", re.I)


def plain(text: str) -> str:
    """ZAP's report fields are HTML paragraphs; the API's are plain text."""
    return "\n".join(line.strip() for line in _TAGS.sub("\n", text or "").splitlines()
                     if line.strip())


def severity_for(alert: Alert, action: Action) -> Severity:
    if action is Action.INFO:
        return Severity.INFO
    severity = RISK_SEVERITY[alert.risk]
    if action is Action.FAIL:
        return max(severity, Severity.HIGH)
    return severity


def to_finding(alert: Alert, action: Action, engine: str) -> Finding:
    refs = tuple(dict.fromkeys(_URL.findall(alert.reference)))
    return Finding(
        id=alert.plugin_id,
        rule=alert.name,
        scanner=SCANNER,
        severity=severity_for(alert, action),
        title=alert.name + (f" ({alert.param})" if alert.param else ""),
        location=Location(url=alert.url),
        confidence=CONFIDENCE.get(alert.confidence, Confidence.UNKNOWN),
        references=refs,
        aliases=(f"CWE-{alert.cwe}",) if alert.cwe > 0 else (),
        raw={"engine": engine, "alertRef": alert.ref, "method": alert.method.upper(),
             "param": alert.param, "attack": alert.attack, "evidence": alert.evidence,
             "risk": alert.risk.name.lower(), "rule_action": action.value,
             "description": plain(alert.description), "solution": plain(alert.solution),
             "other": plain(alert.other), "cweid": alert.cwe, "wascid": alert.wasc,
             # The method is part of what a finding is: GET / and POST / are two findings.
             "code_hash": f"{alert.method.upper()} {alert.param.lower()}"},
    )


def findings_from(report: DastReport, rules: Rules) -> tuple[Finding, ...]:
    seen: dict[tuple[str, str, str, str], tuple[Alert, Action]] = {}
    for alert, action in rules.apply(report.alerts):
        if alert.confidence is AlertConfidence.FALSE_POSITIVE:
            continue  # a person marked it in ZAP
        key = alert.key()
        if key not in seen or alert.risk > seen[key][0].risk:
            seen[key] = (alert, action)
    found = [to_finding(a, act, report.engine) for a, act in seen.values()]
    return tuple(sorted(found, key=lambda f: (-f.severity, f.id, f.location.url or "")))
