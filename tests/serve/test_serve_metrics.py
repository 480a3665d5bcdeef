"""/metrics: the contract's metric names, values that add up across worker processes, and a
real Prometheus server that scrapes them and answers PromQL."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ci_ml.serve.server import RunningServer
from tests.conftest import REPO
from tests.serve.factory import make_model
from tests.serve.prometheus import Prometheus

CONTRACT = {"ci_ml_requests": "counter", "ci_ml_request_duration_seconds": "histogram",
            "ci_ml_requests_in_flight": "gauge", "ci_ml_batch_size": "histogram",
            "ci_ml_predictions": "counter", "ci_ml_model_info": "gauge"}


def post(url: str, body: bytes, conn: http.client.HTTPConnection | None = None) -> int:
    parts = urlsplit(url)
    conn = conn or http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    conn.request("POST", "/predict", body=body, headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    resp.read()
    return resp.status


def scrape(url: str) -> dict[str, object]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    conn.request("GET", "/metrics")
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("Content-Type", "").startswith("text/plain")
    return {f.name: f for f in text_string_to_metric_families(resp.read().decode())}


def sample(families: dict[str, object], name: str, suffix: str = "", **labels: str) -> float:
    family = families[name]
    for s in family.samples:  # type: ignore[attr-defined]
        if s.name == name + suffix and all(s.labels.get(k) == v for k, v in labels.items()):
            return float(s.value)
    raise KeyError((name, suffix, labels))


def test_metric_names_and_values_of_the_contract(served: RunningServer) -> None:
    for _ in range(3):
        assert post(served.url, b'{"inputs": [[1, 2, 3, 4], [0, 0, 0, 0]]}') == 200
    assert post(served.url, b'{"inputs": [[NaN, 2, 3, 4]]}') == 422
    families = scrape(served.url)
    assert {n: families[n].type for n in CONTRACT} == CONTRACT  # type: ignore[attr-defined]
    assert sample(families, "ci_ml_requests", "_total", route="/predict", method="POST",
                  status="200") == 3
    assert sample(families, "ci_ml_requests", "_total", route="/predict", status="422") == 1
    assert sample(families, "ci_ml_batch_size", "_count", route="/predict") == 3
    assert sample(families, "ci_ml_batch_size", "_sum", route="/predict") == 6
    assert sample(families, "ci_ml_request_duration_seconds", "_count", route="/predict") == 4
    per_class = {c: sample(families, "ci_ml_predictions", "_total", **{"class": c})
                 for c in ("a", "b", "c")}
    assert sum(per_class.values()) == 6
    model = served.app.model
    assert sample(families, "ci_ml_model_info", model="model", version="",
                  digest=model.sha256) == 1
    assert sample(families, "ci_ml_requests_in_flight") == 1     # this scrape itself


@pytest.fixture
def two_workers(tmp_path: Path) -> Iterator[str]:
    """``python -m ci_ml.serve --workers 2``, the container's entry point, in a subprocess."""
    model = make_model(tmp_path / "m")
    settings = tmp_path / "serve.json"
    settings.write_text(json.dumps({"host": "127.0.0.1", "port": 0, "version": "7"}))
    proc = subprocess.Popen([sys.executable, "-m", "ci_ml.serve", "--model", str(model),
                             "--settings", str(settings), "--workers", "2"],
                            env={**os.environ, "PYTHONPATH": str(REPO)}, text=True,
                            stderr=subprocess.PIPE)
    assert proc.stderr is not None
    line = proc.stderr.readline()
    assert "with 2 workers on http://" in line, line + proc.stderr.read()
    yield line.strip().split(" on ")[-1]
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err[-2000:]


def test_prometheus_scrapes_two_workers_and_counts_every_request(
        prometheus: Prometheus, two_workers: str) -> None:
    parts = urlsplit(two_workers)
    # Many short connections: the kernel spreads them over both workers' accept loops.
    sent = 0
    for i in range(40):
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        assert post(two_workers, b'{"inputs": [[%d, 2, 3, 4]]}' % i, conn) == 200
        conn.close()
        sent += 1
    for _ in range(3):
        assert post(two_workers, b'{"inputs": [[1, 2]]}') == 422
    prometheus.scrape(two_workers)
    instance = parts.netloc
    count = prometheus.wait_for(
        f'sum(ci_ml_requests_total{{instance="{instance}",route="/predict",status="200"}})',
        float(sent))
    assert count == sent
    assert prometheus.wait_for(
        f'sum(ci_ml_requests_total{{instance="{instance}",route="/predict",status="422"}})',
        3.0) == 3
    rows = prometheus.query(f'sum(ci_ml_predictions_total{{instance="{instance}"}})')
    assert float(rows[0]["value"][1]) == sent
    info = prometheus.query(f'ci_ml_model_info{{instance="{instance}"}}')
    assert len(info) == 1 and info[0]["metric"]["version"] == "7"    # one series, not two
    p50 = prometheus.query('histogram_quantile(0.5, sum by (le) ('
                           f'ci_ml_request_duration_seconds_bucket{{instance="{instance}",'
                           'route="/predict"}))')
    assert p50 and 0 < float(p50[0]["value"][1]) < 10


def test_two_workers_share_one_request_log(tmp_path: Path) -> None:
    """Both workers append whole lines to one file: every request once, no torn lines."""
    model = make_model(tmp_path / "m")
    log = tmp_path / "logs" / "requests.jsonl"
    settings = tmp_path / "serve.json"
    settings.write_text(json.dumps({"host": "127.0.0.1", "port": 0,
                                    "log": {"path": str(log), "sample_rate": 1.0}}))
    proc = subprocess.Popen([sys.executable, "-m", "ci_ml.serve", "--model", str(model),
                             "--settings", str(settings), "--workers", "2"],
                            env={**os.environ, "PYTHONPATH": str(REPO)}, text=True,
                            stderr=subprocess.PIPE)
    assert proc.stderr is not None
    url = proc.stderr.readline().strip().split(" on ")[-1]
    ids = set()
    try:
        for i in range(30):
            parts = urlsplit(url)
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
            conn.request("POST", "/predict", body=b'{"inputs": [[%d, 1, 2, 3]]}' % i,
                         headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            ids.add(resp.getheader("X-Request-Id"))
            conn.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert proc.returncode == 0
    lines = [json.loads(line) for line in log.read_text().splitlines()]   # none torn
    assert {x["id"] for x in lines} == ids and len(lines) == 30
    assert sorted(x["inputs"][0][0] for x in lines) == list(range(30))
