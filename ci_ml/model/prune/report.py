"""``prune-report.json`` and ``prune-tradeoff.png``."""

from __future__ import annotations

import json
from pathlib import Path

from ci_ml.model.prune.plot import plot_tradeoff
from ci_ml.model.prune.result import PruneResult

REPORT_FILE = "prune-report.json"
PLOT_FILE = "prune-tradeoff.png"


def write_prune_report(result: PruneResult, out_dir: Path) -> tuple[Path, Path]:
    """Write ``prune-report.json`` and ``prune-tradeoff.png`` to ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = out_dir / REPORT_FILE
    report.write_text(json.dumps(result.to_json(), indent=2) + "\n", encoding="utf-8")
    plot = out_dir / PLOT_FILE
    plot_tradeoff(result, plot)
    return report, plot
