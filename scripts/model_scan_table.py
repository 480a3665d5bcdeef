"""Build the model-file corpus and record ci-ml's, picklescan's and modelscan's verdicts.

    .venv/bin/python scripts/model_scan_table.py            # print the table
    .venv/bin/python scripts/model_scan_table.py --write    # and put it in docs/scan.md

The corpus is the one the tests build (tests/scan/model_corpus.py): each file is
scanned on its own by each tool. picklescan and modelscan are the PyPI packages (in
the dev extra); ci-ml's verdict is the worst severity of its findings on the file.
The gzip bomb expands to 64 MiB; ci-ml scans with scan.model.max_unpacked_mb 16 here
(the default, 4096, is the same check at a size that would take minutes to build).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ci_ml.scan.interface import ScanRequest, Severity  # noqa: E402
from ci_ml.scan.model_files import ModelFileScanner  # noqa: E402
from tests.scan.model_corpus import build  # noqa: E402

BIN = Path(sys.executable).parent
BEGIN, END = "<!-- model-corpus-table:begin -->", "<!-- model-corpus-table:end -->"


def ci_ml_verdicts(directory: Path) -> dict[str, str]:
    result = ModelFileScanner().scan(ScanRequest(root=directory, targets=(directory,),
                                                 options={"max_unpacked_mb": 16}))
    worst: dict[str, Severity] = {}
    for f in result.findings:
        path = str(f.location.path)
        worst[path] = max(worst.get(path, Severity.UNKNOWN), f.severity)
    return {name: sev.label for name, sev in worst.items()}


def picklescan(path: Path) -> str:
    proc = subprocess.run([str(BIN / "picklescan"), "-p", str(path)], capture_output=True,
                          text=True, timeout=300, check=False)
    out = proc.stdout + proc.stderr
    dangerous = re.search(r"Dangerous globals: (\d+)", out)
    suspicious = re.search(r"Suspicious globals: (\d+)", out)
    scanned = re.search(r"Scanned files: (\d+)", out)
    if dangerous and int(dangerous.group(1)):
        return "dangerous"
    if suspicious and int(suspicious.group(1)):
        return "suspicious"
    if proc.returncode not in (0, 1) or "ERROR" in out:
        return "error"
    if scanned and int(scanned.group(1)) == 0:
        return "not scanned"
    return "clean"


def modelscan(path: Path, work: Path) -> str:
    report = work / "modelscan.json"
    report.unlink(missing_ok=True)
    subprocess.run([str(BIN / "modelscan"), "-p", str(path), "-r", "json", "-o", str(report)],
                   capture_output=True, text=True, timeout=300, check=False, cwd=work)
    try:
        data = json.loads(report.read_text())
    except (OSError, ValueError):
        return "error"
    counts = data["summary"]["total_issues_by_severity"]
    for level in ("CRITICAL", "HIGH", "MEDIUM", "LOW"):
        if counts.get(level):
            return level.lower()
    if data.get("errors"):
        return "error"
    if not data["summary"]["scanned"].get("total_scanned"):
        return "not scanned"
    return "clean"


def table() -> str:
    with tempfile.TemporaryDirectory(prefix="ci-ml-corpus-") as tmp:
        directory, work = Path(tmp) / "corpus", Path(tmp) / "work"
        work.mkdir()
        entries = build(directory, Path(tmp) / "marker-never-created")
        ours = ci_ml_verdicts(directory)
        rows = ["| file | class | expected | ci-ml | picklescan | modelscan |",
                "|---|---|---|---|---|---|"]
        misses = {"ci-ml": 0, "picklescan": 0, "modelscan": 0}
        for e in entries:
            path = directory / e.name
            verdicts = {"ci-ml": ours.get(e.name, "clean"), "picklescan": picklescan(path),
                        "modelscan": modelscan(path, work)}
            for tool, verdict in verdicts.items():
                caught = verdict in ("critical", "high", "dangerous")
                flagged = verdict in ("critical", "high", "dangerous", "error")
                if (e.malicious and not caught) or (not e.malicious and flagged):
                    misses[tool] += 1
                    verdicts[tool] = f"**{verdict}**"
            rows.append(f"| `{e.name}` | {e.covers} | "
                        f"{'malicious' if e.malicious else 'benign'} | {verdicts['ci-ml']} | "
                        f"{verdicts['picklescan']} | {verdicts['modelscan']} |")
        total = len(entries)
        rows += ["", f"Wrong verdicts (**bold** above: a malicious file not rated high/critical "
                 f"or dangerous, or a benign one rated so) out of {total} files: ci-ml "
                 f"{misses['ci-ml']}, picklescan {misses['picklescan']}, modelscan "
                 f"{misses['modelscan']}."]
        return "\n".join(rows) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", action="store_true", help="update docs/scan.md")
    args = parser.parse_args()
    text = table()
    print(text)
    if args.write:
        doc = REPO / "docs" / "scan.md"
        content = doc.read_text()
        start, end = content.index(BEGIN) + len(BEGIN), content.index(END)
        doc.write_text(content[:start] + "\n" + text + content[end:])


if __name__ == "__main__":
    main()
