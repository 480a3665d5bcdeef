"""Evidently's data drift preset on a ci-ml request log: the comparison side of monitor.py.

Run by benchmarks/monitor.py with the Python of a separate virtual environment that has
Evidently (it pins pandas below 3, so it stays out of ci-ml's own environment). Reads the
same JSON-lines log ci-ml reads, builds the window's DataFrame from the logged inputs,
and runs ``Report([DataDriftPreset()])`` against the reference CSV. Prints one JSON line.

    python evidently_drift.py LOG REFERENCE_CSV TARGET
"""

from __future__ import annotations

import json
import resource
import sys
import time


def main() -> None:
    log, reference, target = sys.argv[1], sys.argv[2], sys.argv[3]
    t0 = time.perf_counter()
    c0 = time.process_time()
    import pandas as pd
    from evidently import Report
    from evidently.presets import DataDriftPreset

    ref = pd.read_csv(reference).drop(columns=[target])
    rows = []
    with open(log, encoding="utf-8") as fh:
        for line in fh:
            doc = json.loads(line)
            if doc.get("status") == 200:
                rows.extend(doc["inputs"])
    current = pd.DataFrame(rows, columns=list(ref.columns))
    del rows
    t1 = time.perf_counter()
    snapshot = Report([DataDriftPreset()]).run(current_data=current, reference_data=ref)
    result = snapshot.dict()
    t2 = time.perf_counter()
    drifted = None
    for metric in result.get("metrics", []):
        value = metric.get("value")
        if isinstance(value, dict) and "count" in value and "share" in value:
            drifted = value["count"]
            break
    print(json.dumps({
        "rows": len(current), "load_s": t1 - t0, "drift_s": t2 - t1, "wall_s": t2 - t0,
        "cpu_s": time.process_time() - c0, "drifted_columns": drifted,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "evidently": __import__("evidently").__version__, "pandas": pd.__version__}))


if __name__ == "__main__":
    main()
