"""Gate evaluation cost: 50,000 findings must take under 1 s of CPU.

Measures ``evaluate(evidence, policy)`` (waivers applied, budgets overall and per
scanner, every rule) on synthetic findings from five scanners, with 200 waivers
of which some are expired, at 5,000 and 50,000 findings, side by side in one run.
CPU time (``time.process_time``), best of several repeats, so a noisy shared
machine inflates nothing but wall-clock time. Prints the ratio to the budget and
the 50k/5k ratio (about 10 means linear).

    python benchmarks/gate.py
"""

from __future__ import annotations

import datetime
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ci_ml.gate.evaluate import evaluate  # noqa: E402
from ci_ml.gate.interface import Evidence, StageModel, StagePolicy  # noqa: E402
from ci_ml.report.findings import findings_document  # noqa: E402
from ci_ml.report.markdown import render_summary  # noqa: E402
from ci_ml.scan.interface import (  # noqa: E402
    Finding,
    Location,
    ScanResult,
    ScanStatus,
    Severity,
)
from ci_ml.scan.waivers import Waiver  # noqa: E402

BUDGET_S = 1.0
SCANNERS = ("code", "deps", "image", "model", "dast")
TODAY = datetime.date(2025, 6, 1)


def make_findings(n: int, rng: random.Random) -> dict[str, ScanResult]:
    per: dict[str, list[Finding]] = {s: [] for s in SCANNERS}
    severities = list(Severity)
    for i in range(n):
        scanner = SCANNERS[i % len(SCANNERS)]
        rule = f"R{rng.randrange(400)}"
        loc = (Location(package=f"pkg{rng.randrange(300)}", version="1.0")
               if scanner in ("deps", "image") else
               Location(path=f"src/mod{rng.randrange(500)}.py", line=rng.randrange(1, 400)))
        per[scanner].append(Finding(id=rule, rule=rule, scanner=scanner,
                                    severity=rng.choice(severities), title=f"finding {i}",
                                    location=loc, aliases=(f"CVE-2024-{i % 9999}",)))
    return {s: ScanResult(s, ScanStatus.OK, tuple(f), "tool", "1") for s, f in per.items()}


def make_waivers(rng: random.Random) -> tuple[Waiver, ...]:
    out = []
    for i in range(200):
        expires = TODAY + datetime.timedelta(days=rng.randrange(-60, 365))
        if i % 2:
            out.append(Waiver(f"R{i}", f"pkg{rng.randrange(300)}", None, None, "sec", "ok",
                              expires))
        else:
            out.append(Waiver(f"R{i}", None, f"src/mod{rng.randrange(500)}.py", None, "sec",
                              "ok", expires))
    return tuple(out)


def policy() -> StagePolicy:
    return StagePolicy.from_config("production", {
        "metrics": {"accuracy": {"min": 0.9}},
        "regression": {"accuracy": {"tolerance": 0.01}, "loss": {"direction": "lower",
                                                             "tolerance": 0.1,
                                                             "relative": True}},
        "findings": {"critical": 0, "high": 5, "medium": 50},
        "scanners": {s: {"high": 2, "low": 1000} for s in SCANNERS},
        "required_scans": list(SCANNERS),
        "data_check": "required",
        "limits": {"latency_ms_b1": 5.0, "onnx_bytes": 10_000_000},
        "expired_waivers": "block",
        "require_previous_stage": True,
    })


def evidence(n: int) -> Evidence:
    rng = random.Random(n)
    return Evidence(
        metrics={"accuracy": 0.97, "loss": 0.1},
        data_report={"checks": [{"name": "x", "passed": True}]},
        scans=make_findings(n, rng), waivers=make_waivers(rng), today=TODAY,
        model_digest="sha256:" + "a" * 64,
        stage_models={"production": StageModel("production", 1, "sha256:" + "b" * 64,
                                               {"accuracy": 0.96, "loss": 0.12})},
        passed={"staging": frozenset({"sha256:" + "a" * 64})},
        prune_report={"pruned": {"latency_ms": {"b1": 1.2}, "onnx_bytes": 300_000}},
    )


def cpu_seconds(ev: Evidence, pol: StagePolicy, repeats: int = 5) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        decision = evaluate(ev, pol)
        best = min(best, time.process_time() - start)
    assert decision.rules, "evaluate returned no rules"
    return best


def main() -> int:
    pol = policy()
    small, large = evidence(5_000), evidence(50_000)
    t_small = cpu_seconds(small, pol)
    t_large = cpu_seconds(large, pol)
    decision = evaluate(large, pol)
    assert decision.waivers is not None
    print(f"evaluate, 5,000 findings:  {t_small * 1000:8.1f} ms CPU")
    print(f"evaluate, 50,000 findings: {t_large * 1000:8.1f} ms CPU "
          f"({len(decision.rules)} rules, {len(decision.waivers.suppressed)} waived, "
          f"{len(decision.waivers.expired)} expired waivers)")
    start = time.process_time()
    findings_document(large.scans, decision.waivers)
    render_summary(decision, large, pol)
    t_reports = time.process_time() - start
    print(f"reports for 50,000 (findings.json document + summary.md): {t_reports * 1000:8.1f} "
          "ms CPU (not part of the budget: fingerprints every finding)")
    print(f"50k / 5k ratio: {t_large / t_small:.1f} (10 = linear)")
    print(f"50k vs budget {BUDGET_S:.1f} s: {t_large / BUDGET_S:.2f} of the budget "
          f"({'OK' if t_large < BUDGET_S else 'OVER BUDGET'})")
    return 0 if t_large < BUDGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
