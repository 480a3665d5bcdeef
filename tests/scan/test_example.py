"""The bundled example stays green: clean pins (offline mirror), clean code at medium and
above, a safe model; its gate, which now requires code, deps and model scans, passes."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import run_cli
from tests.report.schema_check import assert_reports_valid
from tests.scan.conftest import scan_result


def test_example_pipeline_passes_with_deps_and_model_required(fast_example: Path,
                                                              tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_cli("run", "--config", fast_example / "ci-ml.yaml", "--out", out)
    assert result.code == 0, result.output
    assert "decision: PASS for staging" in result.stdout
    assert scan_result(out, "deps")["findings"] == []
    assert scan_result(out, "model")["findings"] == []
    assert sorted(scan_result(out, "model")["targets"]) == ["candidate", "model"]
    assert all(f["severity"] in ("low", "info") for f in scan_result(out, "code")["findings"])
    decision = json.loads((out / "decision.json").read_text())
    rules = {r["rule"]: r["outcome"] for r in decision["rules"]}
    assert rules["scan.deps"] == rules["scan.model"] == rules["scan.code"] == "pass"
    # A standalone scan afterwards reuses the cached result and writes the CI reports.
    again = run_cli("scan", "deps", "--config", fast_example / "ci-ml.yaml", "--out", out)
    assert again.code == 0 and "1 from cache" in again.stdout
    assert "report.sarif" in assert_reports_valid(out)
