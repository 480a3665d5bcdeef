"""A recommendation in words and numbers, as ``ci-ml autofix`` and ``ci-ml run --autofix`` print it."""

from __future__ import annotations

from typing import Any

from ci_ml.autofix.interface import Candidate, Recommendation
from ci_ml.autofix.knobs import describe, snippet, value_text

SHOWN = 3   # alternatives printed after the recommended one


def _row(label: str, c: Candidate) -> str:
    p = c.prediction
    return (f"  {label:<12} P(success) {p.p_success:5.3f}  {p.minutes:7.2f} min  "
            f"cost {p.cost:8.5f}  objective {p.objective:8.5f}  | {describe(c.settings)}")


def _numbers(c: Candidate) -> tuple[float, float]:
    return (round(c.prediction.p_success, 3), round(c.prediction.cost, 5))


def lines(rec: Recommendation, penalty: float | None = None) -> list[str]:
    r = rec.record
    c = rec.classification
    out = [f"failed: {r.step} (run {r.run_id}, attempt {r.attempt}): {r.message or 'failed'}",
           f"class: {c.failure_class.value} (rule {c.rule}: {c.evidence})"]
    if rec.current is not None and rec.ranked:
        basis = (f"{rec.history_runs} run(s) of {r.step} in the history" if rec.history_runs
                 else "no history yet: the model's prior")
        out.append(f"model: {len(rec.ranked)} configuration(s) scored on {basis}; "
                   "objective = P(fail) x penalty + cost" +
                   (f" (penalty {penalty:g})" if penalty is not None else ""))
        out.append(_row("failed", rec.current))
        if rec.chosen is not None and rec.chosen is not rec.current:
            out.append(_row("recommended", rec.chosen))
        shown = {_numbers(x) for x in (rec.chosen, rec.current) if x is not None}
        for x in rec.ranked:
            if len(shown) >= SHOWN + 2:
                break
            if _numbers(x) not in shown:   # an alternative that differs in what it predicts
                shown.add(_numbers(x))
                out.append(_row("alternative", x))
    if not rec.retry or rec.chosen is None:
        out.append(f"recommendation: {rec.reason}")
        return out
    if rec.chosen.changes:
        changes = ", ".join(f"{k} {value_text(old, 'none')} -> {value_text(new, 'none')}"
                            for k, (old, new) in rec.chosen.changes.items())
        out.append(f"recommendation: retry {r.step} with {changes} ({rec.reason})")
        out.append("to keep it, put this in the config:")
        out += [f"  {line}" for line in snippet(r.step, rec.chosen.changes)]
    else:
        wait = f" after {rec.backoff_s:g} s" if rec.backoff_s else ""
        out.append(f"recommendation: retry {r.step} unchanged{wait} ({rec.reason})")
    return out


def remediation(rec: Recommendation) -> dict[str, Any]:
    """What the history keeps about the remediation behind a retry."""
    chosen = rec.chosen
    return {
        "after": rec.record.id, "class": rec.classification.failure_class.value,
        "rule": rec.classification.rule,
        "changes": {k: [old, new] for k, (old, new) in (chosen.changes if chosen else {}).items()},
        "p_success": round(chosen.prediction.p_success, 4) if chosen else None,
        "expected_cost": round(chosen.prediction.cost, 6) if chosen else None,
        "objective": round(chosen.prediction.objective, 6) if chosen else None,
        "backoff_s": rec.backoff_s,
    }
