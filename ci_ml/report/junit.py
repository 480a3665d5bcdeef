"""junit.xml: one test case per gate rule, so CI test views show what blocked."""

from __future__ import annotations

from xml.etree import ElementTree as ET

from ci_ml.gate.interface import Decision, Outcome


def render_junit(decision: Decision) -> str:
    failures = len(decision.blocking)
    suite = ET.Element("testsuite", name=f"ci-ml gate ({decision.stage})",
                       tests=str(len(decision.rules)), failures=str(failures), errors="0")
    for rule in decision.rules:
        case = ET.SubElement(suite, "testcase", classname=f"ci-ml.{rule.category}", name=rule.rule)
        if rule.outcome is Outcome.BLOCK:
            failure = ET.SubElement(case, "failure", message=rule.message)
            failure.text = f"observed: {rule.observed!r}\nexpected: {rule.expected!r}"
    suites = ET.Element("testsuites")
    suites.append(suite)
    ET.indent(suites)
    body = ET.tostring(suites, encoding="unicode")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + body + "\n"
