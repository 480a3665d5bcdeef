"""`ci-ml monitor` through the real CLI: reports, exit codes, and every bad input.

Bad input is either a finding (the run goes on and says what it skipped) or one
`error:` line with exit 2 and nothing written; never a crash.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from ci_ml.serve.model import ServedModel
from tests.conftest import CliResult, run_cli
from tests.monitor.conftest import WINDOW_ROWS
from tests.monitor.replay import Split, draw, log_lines, repredict, write_labels, write_log


@pytest.fixture
def clean_lines(digits_model: ServedModel, test_split: Split) -> list[str]:
    return log_lines(draw(test_split, digits_model, 3, WINDOW_ROWS), digits_model.sha256)


def monitor(trained: Path, tmp_path: Path, *args: str | Path, html: bool = False) -> CliResult:
    return run_cli("monitor", "--config", trained / "ci-ml.yaml", "--out", tmp_path / "out",
                   "--model", trained / "out" / "candidate" / "model.onnx", "--window", "2h",
                   *(() if html else ("--no-html",)), *args)


def config_with(trained: Path, tmp_path: Path, monitor_section: dict) -> Path:  # type: ignore[type-arg]
    """The trained project's config with a monitor section, written elsewhere (data paths
    made absolute, since paths in a config are relative to it)."""
    doc = yaml.safe_load((trained / "ci-ml.yaml").read_text())
    for split in ("train", "test"):
        doc["data"][split] = str(trained / doc["data"][split])
    doc["monitor"] = monitor_section
    path = tmp_path / "ci-ml.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def report(tmp_path: Path) -> dict:  # type: ignore[type-arg]
    return json.loads((tmp_path / "out" / "monitor-report.json").read_text())


def rules(doc: dict) -> dict[str, dict]:  # type: ignore[type-arg]
    return {f["rule"]: f for f in doc["findings"]}


def test_clean_traffic_exits_0_with_report_and_html(trained: Path, tmp_path: Path,
                                                    clean_lines: list[str]) -> None:
    log = write_log(tmp_path / "requests.jsonl", clean_lines)
    result = monitor(trained, tmp_path, "--log", log, html=True)
    assert result.code == 0, result.output
    assert result.stdout.strip().splitlines()[-1].startswith("monitor: ok;")
    doc = report(tmp_path)
    assert doc["decision"] == {"status": "ok", "retrain": False, "reasons": []}
    assert doc["window"]["rows"] == WINDOW_ROWS and doc["inputs"]["corrupt"] == 0
    # The profile the data step stored with the model, not a pass over data.train again.
    assert doc["reference"]["kind"] == "stored"
    assert "reference-profile.json" in doc["reference"]["source"]
    assert doc["drift"]["correction"] == "holm" and len(doc["drift"]["features"]) == 64
    assert doc["model"]["digest"] == ServedModel(trained / "out/candidate/model.onnx").sha256
    html = (tmp_path / "out" / "monitor.html").read_text()
    assert "Monitoring: ok" in html and "data:image/png;base64," in html


def test_drift_exits_1_with_a_machine_readable_reason(
        trained: Path, tmp_path: Path, digits_model: ServedModel, test_split: Split,
        train_split: Split) -> None:
    traffic = draw(test_split, digits_model, 4, WINDOW_ROWS)
    j = int(train_split.x.std(axis=0).argmax())
    traffic.rows[:, j] += train_split.x[:, j].std()
    repredict(traffic, digits_model)
    log = write_log(tmp_path / "requests.jsonl", log_lines(traffic, digits_model.sha256))
    result = monitor(trained, tmp_path, "--log", log, html=True)
    name = test_split.features[j]
    assert result.code == 1, result.output
    assert result.stdout.strip().splitlines()[-1].startswith(f"monitor: retrain (feature_drift:{name}")
    doc = report(tmp_path)
    assert doc["decision"]["status"] == "retrain" and doc["decision"]["retrain"] is True
    reason = doc["decision"]["reasons"][0]
    assert reason["code"] == "feature_drift" and reason["subject"] == name
    assert reason["action"] == "retrain" and reason["value"] > reason["threshold"]
    finding = rules(doc)["feature_drift"]
    assert finding["scanner"] == "monitoring" and finding["location"]["path"] == name
    assert f"<td>{name}</td>" in (tmp_path / "out" / "monitor.html").read_text()


def test_corrupt_and_truncated_lines_are_skipped_and_reported(
        trained: Path, tmp_path: Path, clean_lines: list[str]) -> None:
    log = tmp_path / "requests.jsonl"
    oversize = json.dumps({"id": "big", "pad": "x" * 5000})
    with open(log, "wb") as fh:
        fh.write("".join(line + "\n" for line in clean_lines[:-1]).encode())
        fh.write(b"{not json at all\n")
        fh.write(b"\xff\xfe binary \x00 junk\n")
        fh.write(b'{"id": "no-status", "ts": "2026-01-01T00:00:00Z"}\n')
        fh.write(b'[1, 2, 3]\n')
        fh.write(oversize.encode() + b"\n")
        fh.write(clean_lines[-1][: len(clean_lines[-1]) // 2].encode())   # cut off mid-write
    cfg = config_with(trained, tmp_path, {"max_line_bytes": 4096})
    result = run_cli("monitor", "--config", cfg, "--out", tmp_path / "out", "--model",
                     trained / "out/candidate/model.onnx", "--window", "2h", "--log", log,
                     "--no-html")
    assert result.code == 0, result.output
    doc = report(tmp_path)
    assert doc["inputs"]["corrupt"] == 6
    assert doc["window"]["rows"] == WINDOW_ROWS - 1
    finding = rules(doc)["corrupt_log_lines"]
    assert finding["raw"]["count"] == 6
    assert any("not JSON" in e for e in finding["raw"]["examples"])
    assert any("longer than 4096" in e for e in finding["raw"]["examples"])
    assert "6 request log line(s) skipped" in result.stderr
    assert "internal error" not in result.output


def test_lines_of_another_model_digest_or_version_are_not_counted(
        trained: Path, tmp_path: Path, digits_model: ServedModel, test_split: Split) -> None:
    traffic = draw(test_split, digits_model, 5, WINDOW_ROWS)
    ours = log_lines(traffic, digits_model.sha256, version="7")
    theirs = log_lines(traffic, "ab" * 32, version="7")
    old = log_lines(traffic, digits_model.sha256, version="6")
    log = write_log(tmp_path / "requests.jsonl", ours + theirs + old)
    result = monitor(trained, tmp_path, "--log", log, "--model-version", "7")
    assert result.code == 0, result.output
    doc = report(tmp_path)
    assert doc["window"]["rows"] == WINDOW_ROWS
    assert doc["inputs"]["other_model"] == 2 * WINDOW_ROWS
    assert set(doc["inputs"]["other_models"]) == {"abababababab (version 7)",
                                                  f"{digits_model.sha256[:12]} (version 6)"}
    assert rules(doc)["other_model"]["raw"]["count"] == 2 * WINDOW_ROWS


def test_a_log_of_another_model_only_is_a_window_too_small(
        trained: Path, tmp_path: Path, digits_model: ServedModel, test_split: Split) -> None:
    traffic = draw(test_split, digits_model, 6, WINDOW_ROWS)
    log = write_log(tmp_path / "requests.jsonl", log_lines(traffic, "cd" * 32))
    result = monitor(trained, tmp_path, "--log", log)
    assert result.code == 0, result.output
    doc = report(tmp_path)
    assert doc["decision"]["status"] == "insufficient_data"
    assert {"window_too_small", "other_model"} <= set(rules(doc))


def test_a_window_with_too_few_rows_is_a_finding_not_a_verdict(
        trained: Path, tmp_path: Path, digits_model: ServedModel, test_split: Split,
        train_split: Split) -> None:
    traffic = draw(test_split, digits_model, 7, 20)
    traffic.rows[:, 42] += 100.0            # even a wild shift is not judged on 20 rows
    log = write_log(tmp_path / "requests.jsonl", log_lines(traffic, digits_model.sha256))
    result = monitor(trained, tmp_path, "--log", log)
    assert result.code == 0, result.output
    doc = report(tmp_path)
    assert doc["decision"]["status"] == "insufficient_data"
    assert rules(doc)["window_too_small"]["raw"]["rows"] == 20
    assert "fewer than monitor.min_rows (100)" in result.stderr


def test_labels_for_unknown_ids_are_reported_and_never_used(
        trained: Path, tmp_path: Path, digits_model: ServedModel, test_split: Split) -> None:
    traffic = draw(test_split, digits_model, 8, WINDOW_ROWS)
    log = write_log(tmp_path / "requests.jsonl", log_lines(traffic, digits_model.sha256))
    # Every label wrong, for ids the server never returned: trusted, they would sink accuracy.
    forged = [f"forged-{i}" for i in range(WINDOW_ROWS)]
    wrong = [next(c for c in digits_model.card.classes if c != p) for p in traffic.predicted]
    labels = write_labels(tmp_path / "labels.csv", forged, wrong)
    result = monitor(trained, tmp_path, "--log", log, "--labels", labels)
    assert result.code == 0, result.output
    doc = report(tmp_path)
    assert doc["quality"] is None and doc["inputs"]["labels_matched"] == 0
    assert doc["inputs"]["labels_unknown"] == WINDOW_ROWS
    assert rules(doc)["labels_unknown_ids"]["raw"]["count"] == WINDOW_ROWS


def test_late_labels_in_json_lines_join_by_id_and_row(
        trained: Path, tmp_path: Path, digits_model: ServedModel, test_split: Split) -> None:
    traffic = draw(test_split, digits_model, 9, WINDOW_ROWS)
    log = write_log(tmp_path / "requests.jsonl", log_lines(traffic, digits_model.sha256))
    labels = tmp_path / "labels.jsonl"
    labels.write_text("".join(json.dumps({"id": i, "row": 0, "label": t}) + "\n"
                              for i, t in zip(traffic.ids, traffic.truth, strict=True))
                      + '{"id": "x", "label": {"nested": 1}}\nnot json\n')
    result = monitor(trained, tmp_path, "--log", log, "--labels", labels)
    assert result.code == 0, result.output
    doc = report(tmp_path)
    right = sum(t == p for t, p in zip(traffic.truth, traffic.predicted, strict=True))
    assert doc["quality"]["labels"] == WINDOW_ROWS
    assert doc["quality"]["value"] == pytest.approx(right / WINDOW_ROWS)
    assert doc["inputs"]["labels_bad"] == 2


@pytest.mark.parametrize("case", ["missing-log", "log-dir", "binary-labels", "labels-no-id",
                                  "bad-until", "bad-window", "bad-reference", "missing-model"])
def test_unusable_inputs_exit_2_with_one_error_line_and_write_nothing(
        trained: Path, tmp_path: Path, clean_lines: list[str], case: str) -> None:
    log = write_log(tmp_path / "requests.jsonl", clean_lines)
    args: list[str | Path] = ["--log", log]
    expect = ""
    if case == "missing-log":
        args, expect = ["--log", tmp_path / "nope.jsonl"], "request log not found"
    elif case == "log-dir":
        args, expect = ["--log", tmp_path], "is a directory"
    elif case == "binary-labels":
        (tmp_path / "labels.csv").write_bytes(b"id,label\n\x00\x01\x02")
        args += ["--labels", tmp_path / "labels.csv"]
        expect = "binary data"
    elif case == "labels-no-id":
        (tmp_path / "labels.csv").write_text("request,label\nx,1\n")
        args += ["--labels", tmp_path / "labels.csv"]
        expect = "needs the columns 'id' and 'label'"
    elif case == "bad-until":
        args += ["--until", "yesterday"]
        expect = "RFC 3339"
    elif case == "bad-window":
        args += ["--window", "soon"]
        expect = "not a duration"
    elif case == "bad-reference":
        (tmp_path / "ref.json").write_text('{"format": "ci-ml/monitor-reference/1", "columns": 3}')
        args += ["--reference", tmp_path / "ref.json"]
        expect = "malformed monitoring reference"
    elif case == "missing-model":
        result = run_cli("monitor", "--config", trained / "ci-ml.yaml", "--out", tmp_path / "out",
                         "--model", tmp_path / "none.onnx", "--log", log)
        assert result.code == 2 and "ONNX model not found" in result.stderr
        assert not (tmp_path / "out").exists()
        return
    result = monitor(trained, tmp_path, *args)
    assert result.code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and expect in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out" / "monitor-report.json").exists()


def test_a_bad_monitor_section_is_a_config_error(trained: Path, tmp_path: Path,
                                                 clean_lines: list[str]) -> None:
    cfg = config_with(trained, tmp_path, {"drift": {"correction": "fdr"}})
    result = run_cli("monitor", "--config", cfg, "--out", tmp_path / "out", "--log",
                     write_log(tmp_path / "l.jsonl", clean_lines))
    assert result.code == 2 and "monitor.drift.correction" in result.stderr, result.stderr


def test_the_model_of_a_registry_stage_is_monitored(project: Path, tmp_path: Path,
                                                    digits_model: ServedModel,
                                                    test_split: Split) -> None:
    from tests.gate.trained import cli

    assert cli(project, "promote", "--stage", "staging").code == 0
    log = write_log(tmp_path / "requests.jsonl",
                    log_lines(draw(test_split, digits_model, 13, WINDOW_ROWS),
                              digits_model.sha256))
    result = run_cli("monitor", "--config", project / "ci-ml.yaml", "--out", tmp_path / "out",
                     "--stage", "staging", "--log", log, "--no-html", cwd=project)
    assert result.code == 0, result.output
    assert "monitoring v1 of the registry's staging" in result.stderr
    doc = report(tmp_path)
    assert doc["model"]["digest"] == digits_model.sha256 and doc["window"]["rows"] == WINDOW_ROWS
    assert doc["reference"]["metrics"]["accuracy"] > 0.5     # the registry's recorded metrics
    empty = run_cli("monitor", "--config", project / "ci-ml.yaml", "--out", tmp_path / "o2",
                    "--stage", "production", "--log", log, cwd=project)
    assert empty.code == 2 and "holds no model in production" in empty.stderr
