"""summary.md and report.html from a decision: what a reviewer sees first, and the plots."""

from __future__ import annotations

import base64
import datetime
import re

from ci_ml.gate.evaluate import evaluate
from ci_ml.gate.interface import Evidence, StageModel, StagePolicy
from ci_ml.report.html import MetricPoint, render_html
from ci_ml.report.junit import render_junit
from ci_ml.report.markdown import render_summary
from ci_ml.scan.interface import Finding, Location, ScanResult, ScanStatus, Severity
from ci_ml.scan.waivers import Scope, Waiver

TODAY = datetime.date(2025, 6, 1)
PRUNE = {"base": {"latency_ms": {"b1": 0.40, "b256": 12.0}, "onnx_bytes": 400_000},
         "pruned": {"latency_ms": {"b1": 0.20, "b256": 5.0}, "onnx_bytes": 120_000},
         "accuracy_drop": 0.3,
         "trials": [{"onnx_bytes": 400_000, "accuracy": 99.0},
                    {"onnx_bytes": 120_000, "accuracy": 98.7, "chosen": True},
                    {"onnx_bytes": 60_000, "accuracy": 91.0}]}


def scenario() -> tuple[Evidence, StagePolicy]:
    findings = (Finding("B602", "B602", "code", Severity.HIGH, "shell", Location(path="a.py")),
                Finding("B101", "B101", "code", Severity.LOW, "assert", Location(path="b.py")))
    waiver = Waiver("B602", Scope("path", "a.py"), "sec", "constant command",
                    TODAY + datetime.timedelta(days=3))
    prod = StageModel("production", 2, "sha256:" + "c" * 64, {"accuracy": 0.97, "loss": 0.1})
    ev = Evidence(metrics={"accuracy": 0.95, "loss": 0.2, "samples": 360},
                  data_report={"checks": []},
                  scans={"code": ScanResult("code", ScanStatus.OK, findings, "bandit", "1"),
                         "deps": ScanResult.failed("deps", "pip-audit", "network down")},
                  waivers=(waiver,), today=TODAY, model_digest="sha256:" + "a" * 64,
                  stage_models={"production": prod}, prune_report=PRUNE)
    pol = StagePolicy.from_config("staging", {"metrics": {"accuracy": {"min": 0.96}},
                                              "findings": {"high": 0}})
    return ev, pol


def test_summary_puts_the_verdict_and_blockers_first() -> None:
    ev, pol = scenario()
    decision = evaluate(ev, pol)
    text = render_summary(decision, ev, pol)
    lines = text.splitlines()
    assert lines[0] == "## ci-ml gate: ⛔ BLOCKED for staging"
    blocking = text.split("### Metrics")[0]
    assert "`metric.accuracy`: accuracy = 0.9500 (needs >= 0.96)" in blocking
    assert "`scan.deps`: scan 'deps' failed: network down" in blocking
    assert "| accuracy | 0.9500 | 0.9700 | -0.0200 | >= 0.96 |" in text
    assert "samples" not in text.split("### Findings")[0]
    assert "| code | ok | 0 | 0 | 0 | 1 | 0 | 1 |" in text
    assert "| deps | **did not run**: network down |" in text
    assert "expires **2025-06-04** (in 3 days)" in text
    assert "| latency, batch 1 (ms) | 0.4 | 0.2 | 2.00x |" in text
    assert "<details>" in text  # all rules folded below


def test_report_html_is_self_contained_with_three_plots() -> None:
    ev, pol = scenario()
    decision = evaluate(ev, pol)
    history = [MetricPoint("v1", {"accuracy": 0.93}), MetricPoint("v2", {"accuracy": 0.97},
                                                                  ("production",)),
               MetricPoint("candidate", ev.metrics)]
    html = render_html(decision, ev, pol, history)
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(images) == 3
    assert all(base64.b64decode(i).startswith(b"\x89PNG") for i in images)
    assert not re.search(r'(src|href)="(https?:)?//', html)
    assert "<script" not in html


def test_junit_has_one_failing_case_per_blocking_rule() -> None:
    ev, pol = scenario()
    decision = evaluate(ev, pol)
    xml = render_junit(decision)
    assert f'tests="{len(decision.rules)}"' in xml
    assert f'failures="{len(decision.blocking)}"' in xml
