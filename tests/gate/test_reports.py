"""summary.md and report.html from a decision: what a reviewer sees first, and the plots."""

from __future__ import annotations

import datetime
import re
from pathlib import Path

from ci_ml.gate.evaluate import evaluate
from ci_ml.gate.interface import Evidence, StageModel, StagePolicy
from ci_ml.report.html import MetricPoint, render_html
from ci_ml.report.junit import render_junit
from ci_ml.report.markdown import render_summary
from ci_ml.scan.interface import Finding, Location, ScanResult, ScanStatus, Severity
from ci_ml.scan.waivers import Scope, Waiver

TODAY = datetime.date(2025, 6, 1)
# prune-report.json as the prune step writes it (shortened).
PRUNE = {"pruned": True, "met_budget": True, "reason": "ratio 0.750: 2.00x faster",
         "candidate": {"model": "pruned", "why": "ratio 0.750 (widths [16, 32, 32]): 2.00x "
                       "faster at batch 1, 2.40x faster at batch 256", "files": []},
         "comparison": {
             "base": {"params": 100_000, "macs": 2_400_000, "onnx_bytes": 400_000,
                      "latency_us": {"1": 400.0, "256": 12_000.0}, "accuracy": 99.0},
             "candidate": {"params": 12_000, "macs": 300_000, "onnx_bytes": 120_000,
                           "latency_us": {"1": 200.0, "256": 5_000.0}, "accuracy": 98.7},
             "ratios": {"speedup": {"1": 2.0, "256": 2.4}, "cpu_speedup": {"1": 1.9, "256": 2.3}}}}


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
    assert "<details>" in text  # all rules folded below


def test_summary_tells_the_run_and_the_pruning_per_batch_size() -> None:
    ev, pol = scenario()
    text = render_summary(evaluate(ev, pol), ev, pol)
    assert "- Candidate: the pruned model (ratio 0.750 (widths [16, 32, 32]): 2.00x" in text
    assert "| latency at batch 1 (µs) | 400 | 200 | 2.00x |" in text
    assert "| latency at batch 256 (µs) | 12,000 | 5,000 | 2.40x |" in text
    assert "| test accuracy (%) | 99.00 | 98.70 | -0.30 points |" in text


def test_report_html_is_self_contained_and_words_it_as_the_summary(tmp_path: Path) -> None:
    ev, pol = scenario()
    decision = evaluate(ev, pol)
    history = [MetricPoint("v1", {"accuracy": 0.93}), MetricPoint("v2", {"accuracy": 0.97},
                                                                  ("production",)),
               MetricPoint("candidate", ev.metrics)]
    html = render_html(decision, ev, pol, history, tmp_path)
    summary = render_summary(decision, ev, pol)
    for section in ("verdict", "data", "training", "pruning", "metrics", "findings", "rules"):
        assert f'<section id="{section}">' in html or f'<header id="{section}">' in html
    # The same sentence in both; the short digest with the full one on hover.
    sentence = "Candidate: the pruned model (ratio 0.750 (widths [16, 32, 32])"
    assert sentence in summary and sentence in html
    assert f'<code title="sha256:{"a" * 64}">{"a" * 12}</code>' in html
    assert "2.40x" in html and "12,000" in html
    assert not re.search(r'(src|href)="(https?:)?//', html)
    assert "<script" not in html


def test_junit_has_one_failing_case_per_blocking_rule() -> None:
    ev, pol = scenario()
    decision = evaluate(ev, pol)
    xml = render_junit(decision)
    assert f'tests="{len(decision.rules)}"' in xml
    assert f'failures="{len(decision.blocking)}"' in xml
