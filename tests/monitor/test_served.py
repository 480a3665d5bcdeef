"""The loop on ci-ml's own server: replayed traffic through the real HTTP stack, its request
log, late labels through the label route, and a real Prometheus (Debian's, on 127.0.0.1)
scraping the server, from which `ci-ml monitor` reads the SLO figures."""

from __future__ import annotations

import http.client
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from ci_ml.serve.labels import LabelSettings
from ci_ml.serve.model import ServedModel
from ci_ml.serve.server import RunningServer, start_background
from ci_ml.serve.settings import LogSettings, ServeSettings
from tests.conftest import run_cli
from tests.monitor.conftest import WINDOW_ROWS
from tests.monitor.replay import Split, draw
from tests.serve.prometheus import Prometheus

TOKEN = "labels-token-0123456789abcdef"


def call(url: str, method: str, path: str, body: Any = None,
         headers: dict[str, str] | None = None) -> tuple[int, Any, dict[str, str]]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    data = body if isinstance(body, bytes) else (json.dumps(body).encode() if body is not None
                                                 else None)
    conn.request(method, path, body=data, headers={"Content-Type": "application/json",
                                                   **(headers or {})})
    resp = conn.getresponse()
    raw = resp.read()
    conn.close()
    return resp.status, json.loads(raw) if raw else None, dict(resp.getheaders())


@dataclass
class Served:
    server: RunningServer
    log: Path
    labels: Path
    ids: list[str]
    truth: list[str]


@pytest.fixture(scope="module")
def served(trained: Path, tmp_path_factory: pytest.TempPathFactory, digits_model: ServedModel,
           test_split: Split, prometheus: Prometheus) -> Iterator[Served]:
    """The trained example served with every request logged and the label route on, scraped
    by Prometheus; then a replayed window of the test split sent through it over a few
    seconds (so that the scrapes see the load), plus five requests it refuses."""
    work = tmp_path_factory.mktemp("served")
    os.environ["CI_ML_LABELS_TOKEN"] = TOKEN
    settings = ServeSettings(port=0, version="1",
                             log=LogSettings(path=work / "requests.jsonl", sample_rate=1.0),
                             labels=LabelSettings(path=work / "labels.jsonl"))
    server = start_background(ServedModel(trained / "out" / "candidate" / "model.onnx"), settings)
    prometheus.scrape(server.url)
    assert prometheus.wait_for("sum(ci_ml_model_info)", 1, timeout=60) == 1, "not scraped"
    traffic = draw(test_split, digits_model, 31, WINDOW_ROWS)
    ids = []
    for n, row in enumerate(traffic.rows):
        if n % 30 == 0:
            time.sleep(1.0)         # spread over several scrapes (one a second)
        status, doc, headers = call(server.url, "POST", "/predict",
                                    {"inputs": [[float(v) for v in row]]})
        assert status == 200
        assert doc["id"] == headers["x-request-id"]
        ids.append(doc["id"])
    for _ in range(5):
        assert call(server.url, "POST", "/predict", {"inputs": [[1, 2]]})[0] == 422
    yield Served(server, work / "requests.jsonl", work / "labels.jsonl", ids, traffic.truth)
    server.stop()
    os.environ.pop("CI_ML_LABELS_TOKEN", None)


def test_the_label_route_takes_labels_only_with_the_token_and_valid_rows(served: Served) -> None:
    url = served.server.url
    auth = {"Authorization": f"Bearer {TOKEN}"}
    rows = [{"id": i, "row": 0, "label": t} for i, t in zip(served.ids, served.truth,
                                                                strict=True)]
    assert call(url, "POST", "/labels", {"labels": rows[:3]})[0] == 401
    status, _, headers = call(url, "POST", "/labels", {"labels": rows[:3]},
                              {"Authorization": "Bearer " + "x" * len(TOKEN)})
    assert status == 401 and headers["www-authenticate"].startswith("Bearer")
    for bad, message in ((
            {"labels": [{"id": "1; DROP", "label": "3"}]}, "not a request id"),
            ({"labels": [{"id": served.ids[0], "label": True}]}, "string or a finite number"),
            ({"labels": [{"id": served.ids[0], "row": 999, "label": "1"}]}, ".row"),
            ({"labels": [{"id": served.ids[0], "label": "1", "extra": 1}]}, "optionally 'row'"),
            ({"rows": []}, "exactly 'labels'")):
        status, doc, _ = call(url, "POST", "/labels", bad, auth)
        assert status == 422 and message in doc["error"], doc
    status, doc, _ = call(url, "POST", "/labels", {"labels": rows * 7}, auth)
    assert status == 413 and "exceed the limit of 1000" in doc["error"]
    assert call(url, "GET", "/labels", headers=auth)[0] == 405
    status, doc, _ = call(url, "POST", "/labels", {"labels": rows}, auth)
    assert status == 200 and doc == {"accepted": WINDOW_ROWS}


def test_monitor_reads_the_served_log_labels_and_prometheus(
        served: Served, prometheus: Prometheus, trained: Path, tmp_path: Path) -> None:
    assert call(served.server.url, "POST", "/labels", {"labels": [
        {"id": i, "label": t} for i, t in zip(served.ids, served.truth, strict=True)]},
        {"Authorization": f"Bearer {TOKEN}"})[0] == 200
    total = WINDOW_ROWS + 5
    seen = prometheus.wait_for('sum(ci_ml_requests_total{route="/predict"})', total, timeout=60)
    assert seen == total
    served.server.app.request_log.close()       # flush the log before reading it
    served.server.app.labels.close()
    result = run_cli("monitor", "--config", trained / "ci-ml.yaml", "--out", tmp_path / "out",
                     "--model", trained / "out/candidate/model.onnx", "--log", served.log,
                     "--labels", served.labels, "--prometheus-url", prometheus.url,
                     "--window", "15m", "--no-html")
    assert result.code == 0, result.output
    doc = json.loads((tmp_path / "out" / "monitor-report.json").read_text())
    assert doc["window"]["rows"] == WINDOW_ROWS and doc["inputs"]["corrupt"] == 0
    assert doc["inputs"]["failed"] == 5                 # the refused requests are logged too
    assert doc["quality"]["labels"] == WINDOW_ROWS and doc["inputs"]["labels_unknown"] == 0
    service = doc["service"]
    assert service["source"] == f"prometheus {prometheus.url}"
    assert service["requests"] == pytest.approx(total, rel=0.25)
    checks = {c["name"]: c for c in service["checks"]}
    assert checks["error_rate"]["value"] == 0 and not checks["error_rate"]["breached"]
    assert 0 < checks["latency_p99"]["value"] < 500 and not checks["latency_p99"]["breached"]

    # The same figures against an SLO the server cannot meet: an alert, not a retrain.
    cfg = yaml.safe_load((trained / "ci-ml.yaml").read_text())
    for split in ("train", "test"):
        cfg["data"][split] = str(trained / cfg["data"][split])
    cfg["monitor"] = {"prometheus": {"url": prometheus.url},
                      "slo": {"latency": [{"quantile": 0.5, "max_ms": 0.001}]}}
    (tmp_path / "slo.yaml").write_text(yaml.safe_dump(cfg))
    breach = run_cli("monitor", "--config", tmp_path / "slo.yaml", "--out", tmp_path / "o2",
                     "--model", trained / "out/candidate/model.onnx", "--log", served.log,
                     "--window", "15m", "--no-html")
    assert breach.code == 1, breach.output
    decision = json.loads((tmp_path / "o2" / "monitor-report.json").read_text())["decision"]
    assert decision["status"] == "alert" and decision["retrain"] is False
    assert [(r["code"], r["subject"]) for r in decision["reasons"]] == [("slo", "latency_p50")]
    assert "prometheus" in decision["reasons"][0]["message"]


def test_an_unreachable_prometheus_is_a_tool_error(served: Served, trained: Path,
                                                   tmp_path: Path) -> None:
    result = run_cli("monitor", "--config", trained / "ci-ml.yaml", "--out", tmp_path / "out",
                     "--model", trained / "out/candidate/model.onnx", "--log", served.log,
                     "--prometheus-url", "http://127.0.0.1:9", "--no-html")
    assert result.code == 3 and "did not answer" in result.stderr, result.output
