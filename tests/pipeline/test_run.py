"""Acceptance tests of `ci-ml run`: artifacts, caching, invalidation, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from ci_ml.autofix.record import HISTORY_DIR
from tests.conftest import REPO, run_cli

CORE_ARTIFACTS = ("metrics.json", "findings.json", "decision.json", "summary.md", "manifest.json",
                  "data-report.json", "junit.xml")


def _manifest(out: Path) -> dict[str, dict]:
    data = json.loads((out / "manifest.json").read_text())
    return {s["name"]: s for s in data["steps"]}


def _ran(out: Path) -> set[str]:
    return {name for name, s in _manifest(out).items() if not s["cached"] and s["status"] != "skipped"}


def test_cold_run_writes_artifacts_and_decision(fast_example: Path) -> None:
    result = run_cli("run", "--out", "out", cwd=fast_example)
    assert result.code == 0, result.output
    assert "decision: PASS for staging" in result.stdout
    out = fast_example / "out"
    for name in CORE_ARTIFACTS:
        assert (out / name).is_file(), name
    assert (out / "model" / "model.safetensors").is_file()
    manifest = _manifest(out)
    scans = [n for n in manifest if n.startswith("scan-")]
    assert list(manifest) == ["data-check", "train", "prune", *scans, "gate"]
    for step in manifest.values():
        if step["status"] == "skipped":
            continue
        assert step["cached"] is False
        assert step["duration_s"] >= 0
        assert step["outputs"], step["name"]
        assert all(len(h) == 64 for h in step["outputs"].values())
    assert manifest["train"]["inputs"]["files"]["data/train.csv"] == \
        manifest["data-check"]["inputs"]["files"]["data/train.csv"]
    decision = json.loads((out / "decision.json").read_text())
    assert decision["decision"] == "pass"
    assert {r["rule"] for r in decision["rules"]} >= {"metric.accuracy", "scan.code", "data.checks"}
    # Progress reads as plain lines in a CI log.
    assert "[1/" in result.stderr and "epoch 2/2" in result.stderr


def test_warm_run_is_fully_cached_and_source_change_reruns_only_its_steps(fast_example: Path) -> None:
    assert run_cli("run", "--out", "out", cwd=fast_example).code == 0
    out = fast_example / "out"
    first = _manifest(out)

    warm = run_cli("run", "--out", "out", cwd=fast_example)
    assert warm.code == 0, warm.output
    assert _ran(out) == set()
    done = len([s for s in first.values() if s["status"] != "skipped"])
    assert f"steps: 0 ran, {done} from cache" in warm.stdout
    for name, step in _manifest(out).items():
        assert step["key"] == first[name]["key"]
        assert step["outputs"] == first[name]["outputs"]
    # A fully cached run never pays for importing torch.
    probe = ("import sys\nfrom ci_ml.cli import main\ntry:\n    main(['run', '--out', 'out', '-q'])\n"
             "except SystemExit as e:\n    assert e.code == 0, e.code\nprint('torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", probe], cwd=fast_example, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, check=False)
    assert proc.stdout.strip().endswith("False"), proc.stdout + proc.stderr

    # Touch only a source file: only the code scan reads it.
    src = fast_example / "src" / "digits_app" / "features.py"
    src.write_text(src.read_text() + "\n# a comment that changes nothing\n")
    assert run_cli("run", "--out", "out", cwd=fast_example).code == 0
    assert _ran(out) == {"scan-code"}

    # Change the data: everything downstream of the data runs again.
    train_csv = fast_example / "data" / "train.csv"
    lines = train_csv.read_text().splitlines()
    train_csv.write_text("\n".join(lines[:-1]) + "\n")
    assert run_cli("run", "--out", "out", cwd=fast_example).code == 0
    assert {"data-check", "train", "prune"} <= _ran(out)

    # --force ignores the cache.
    assert run_cli("run", "--out", "out", "--force", cwd=fast_example).code == 0
    assert "scan-code" in _ran(out) and "train" in _ran(out)


def test_config_change_invalidates_only_dependent_steps(fast_example: Path) -> None:
    assert run_cli("run", "--out", "out", cwd=fast_example).code == 0
    cfg = fast_example / "ci-ml.yaml"
    cfg.write_text(cfg.read_text().replace("accuracy: {min: 0.5}", "accuracy: {min: 0.4}"))
    assert run_cli("run", "--out", "out", cwd=fast_example).code == 0
    assert _ran(fast_example / "out") == {"gate"}


def test_only_runs_a_step_and_what_it_needs(fast_example: Path) -> None:
    result = run_cli("train", "--out", "out", cwd=fast_example)
    assert result.code == 0, result.output
    out = fast_example / "out"
    assert set(_manifest(out)) == {"data-check", "train"}
    assert not (out / "decision.json").exists()
    # A later full run reuses both from the cache.
    assert run_cli("run", "--out", "out", cwd=fast_example).code == 0
    manifest = _manifest(out)
    assert manifest["train"]["cached"] and manifest["data-check"]["cached"]


def test_gate_block_exits_1(fast_example: Path) -> None:
    cfg = fast_example / "ci-ml.yaml"
    cfg.write_text(cfg.read_text().replace("accuracy: {min: 0.5}", "accuracy: {min: 1.01}"))
    result = run_cli("run", "--out", "out", cwd=fast_example)
    assert result.code == 1, result.output
    assert "decision: BLOCK for staging (blocking: metric.accuracy)" in result.stdout
    summary = (fast_example / "out" / "summary.md").read_text()
    assert "BLOCKED for staging" in summary.splitlines()[0]


def test_missing_tool_fails_closed_with_exit_3(fast_example: Path) -> None:
    result = run_cli("run", "--out", "out", cwd=fast_example,
                     env={"CI_ML_TOOL_BANDIT": str(fast_example / "no-such-bandit")})
    assert result.code == 3, result.output
    out = fast_example / "out"
    scan = json.loads((out / "scans" / "code.json").read_text())
    assert scan["status"] == "error" and scan["findings"] == []
    decision = json.loads((out / "decision.json").read_text())
    assert decision["decision"] == "block" and "scan.code" in decision["blocking"]
    assert "error: scan-code: did not run" in result.stderr
    # A failed scan is never cached: with the tool back, it runs for real.
    assert run_cli("run", "--out", "out", cwd=fast_example).code == 0
    assert "scan-code" in _ran(out)


def test_concurrent_runs_share_the_cache_safely(fast_example: Path, tmp_path: Path) -> None:
    assert run_cli("train", "--out", "warm", cwd=fast_example).code == 0
    env = {"PYTHONPATH": str(REPO), "CI": "true", "PATH": "/usr/bin:/bin"}
    procs = [subprocess.Popen([sys.executable, "-m", "ci_ml", "run", "--out", f"out{i}", "-q"],
                              cwd=fast_example, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(3)]
    for p in procs:
        stdout, stderr = p.communicate(timeout=600)
        assert p.returncode == 0, stderr
    # Deterministic steps agree on their keys; prune measures latency, so its report (and
    # what comes after it) may differ between runs that each measured for themselves.
    deterministic = ("data-check", "train", "scan-code")
    keys = [{n: s["key"] for n, s in _manifest(fast_example / f"out{i}").items()
             if n in deterministic} for i in range(3)]
    assert keys[0] == keys[1] == keys[2] and len(keys[0]) == 3
    cache = fast_example / ".ci-ml-cache"
    for entry in cache.glob("*/*"):
        if entry.parent.name == HISTORY_DIR:   # the run history lives beside the entries
            continue
        assert (entry / "entry.json").is_file(), entry
    assert not list(cache.glob("*/.*")), "temporary cache entries left behind"
