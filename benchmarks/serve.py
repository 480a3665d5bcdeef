"""Model server benchmark: latency over a bare ONNX Runtime run, throughput, a soak, a DAST scan.

    python benchmarks/serve.py [--model candidate/model.onnx] [--duration 60] [--concurrency 4]

Without --model it trains and exports the bundled example first (fixtures/example, in a
temporary directory). The server runs in its own process (`python -m ci_ml.serve`, the
container's entry point) on a loopback port; clients use keep-alive connections with
TCP_NODELAY. Everything is measured side by side in this one run:

1. bare: ``InferenceSession.run`` on the prepared batch-1 input, in this process;
2. served: one client, POST /predict with the same sample, sequential requests;
   the p50 difference is the server's overhead (target: at most 1 ms);
3. load: N clients for --duration seconds: throughput, p50/p99, errors (target: none),
   the server's RSS sampled through the run (target: flat, growth under 10%);
4. the built-in DAST scan of the same endpoint (target: at most 30 s).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ci_ml.serve.model import ServedModel  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def build_example_model(work: Path) -> Path:
    project = work / "example"
    shutil.copytree(REPO / "fixtures" / "example", project,
                    ignore=shutil.ignore_patterns(".ci-ml-cache"))
    env = {**os.environ, "PYTHONPATH": str(REPO), "CI_ML_CACHE": str(work / "cache")}
    subprocess.run([sys.executable, "-m", "ci_ml", "prune", "--config",
                    str(project / "ci-ml.yaml"), "--out", str(work / "out"), "--quiet"],
                   check=True, env=env)
    return work / "out" / "candidate" / "model.onnx"


def start_server(model: Path, work: Path, concurrency: int) -> tuple[subprocess.Popen[str], str]:
    settings = work / "serve.json"
    settings.write_text(json.dumps({"host": "127.0.0.1", "port": 0, "threads": 1,
                                    "limits": {"max_connections": concurrency + 8}}))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "ci_ml.serve", "--model", str(model),
                             "--settings", str(settings)], env=env, text=True,
                            stderr=subprocess.PIPE)
    assert proc.stderr is not None
    line = proc.stderr.readline()
    if " on http://" not in line:
        proc.kill()
        raise SystemExit(f"server did not start: {line}{proc.stderr.read()}")
    # Keep draining stderr so the server never blocks on a full pipe.
    threading.Thread(target=proc.stderr.read, daemon=True).start()
    return proc, line.strip().split(" on ")[-1]


class Client:
    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=30)
        self.conn.connect()
        self.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def post(self, body: bytes) -> int:
        self.conn.request("POST", "/predict", body=body,
                          headers={"Content-Type": "application/json"})
        resp = self.conn.getresponse()
        resp.read()
        return resp.status


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def bench_bare(model: ServedModel, raw: np.ndarray, n: int) -> list[float]:
    x = model.prepare(raw)
    sig = model.signature
    for _ in range(200):
        model.session.run([sig.output_name], {sig.input_name: x})
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        model.session.run([sig.output_name], {sig.input_name: x})
        times.append((time.perf_counter() - t0) * 1000)
    return times


def bench_served(url: str, body: bytes, n: int) -> list[float]:
    client = Client(url)
    for _ in range(200):
        client.post(body)
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        status = client.post(body)
        times.append((time.perf_counter() - t0) * 1000)
        assert status == 200, status
    return times


def bench_load(url: str, body: bytes, pid: int, duration: float, concurrency: int
               ) -> dict[str, object]:
    stop = time.monotonic() + duration
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    errors = [0] * concurrency
    rss: list[tuple[float, int]] = []

    def worker(i: int) -> None:
        client = Client(url)
        while time.monotonic() < stop:
            t0 = time.perf_counter()
            try:
                status = client.post(body)
            except (OSError, http.client.HTTPException):
                status = -1
                client = Client(url)
            latencies[i].append((time.perf_counter() - t0) * 1000)
            if status != 200:
                errors[i] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    started = time.monotonic()
    for t in threads:
        t.start()
    while time.monotonic() < stop:
        rss.append((time.monotonic() - started, rss_kb(pid)))
        time.sleep(min(2.0, max(0.0, stop - time.monotonic())))
    for t in threads:
        t.join()
    rss.append((time.monotonic() - started, rss_kb(pid)))
    elapsed = time.monotonic() - started
    flat = [v for lat in latencies for v in lat]
    return {"requests": len(flat), "errors": sum(errors), "seconds": elapsed,
            "throughput": len(flat) / elapsed, "p50": percentile(flat, 50),
            "p99": percentile(flat, 99), "rss": rss}


def bench_dast(url: str) -> tuple[float, int, int]:
    from ci_ml.dast.builtin import BuiltinEngine
    from ci_ml.dast.findings import findings_from
    from ci_ml.dast.http import Client as DastClient
    from ci_ml.dast.interface import DastOptions
    from ci_ml.dast.rules import Rules
    from ci_ml.dast.target import discover

    t0 = time.perf_counter()
    report = BuiltinEngine().scan(discover(DastClient(url, 10.0)), DastOptions())
    seconds = time.perf_counter() - t0
    findings = findings_from(report, Rules())
    return seconds, report.requests, sum(1 for f in findings if f.severity >= 3)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--requests", type=int, default=3000, help="sequential requests per phase")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ci-ml-bench-"))
    proc = None
    try:
        model_path = args.model or build_example_model(work)
        model = ServedModel(model_path, threads=1)
        n = model.signature.n_features
        test_csv = REPO / "fixtures" / "example" / "data" / "test.csv"
        row = test_csv.read_text().splitlines()[1].split(",")[:n]
        raw = np.asarray([[float(v) for v in row]])
        body = json.dumps({"inputs": raw.tolist()}).encode()
        proc, url = start_server(model_path, work, args.concurrency)
        print(f"model {model_path} ({model.signature.sample_shape}), server pid {proc.pid} {url}")

        bare = bench_bare(model, raw, args.requests)
        served = bench_served(url, body, args.requests)
        bare_again = bench_bare(model, raw, args.requests)      # bracket the served run
        bare_p50 = statistics.median(bare + bare_again)
        over = percentile(served, 50) - bare_p50
        print(f"\nbatch 1, {args.requests} sequential requests")
        print(f"  bare onnxruntime run  p50 {bare_p50:.3f} ms  p99 {percentile(bare, 99):.3f} ms")
        print(f"  served POST /predict  p50 {percentile(served, 50):.3f} ms  "
              f"p99 {percentile(served, 99):.3f} ms")
        print(f"  server overhead p50   {over:.3f} ms   (target <= 1.0 ms: "
              f"{'OK' if over <= 1.0 else 'MISSED'})")

        load = bench_load(url, body, proc.pid, args.duration, args.concurrency)
        rss = load["rss"]
        assert isinstance(rss, list)
        warm = rss[min(2, len(rss) - 1)][1]
        peak = max(v for _, v in rss)
        growth = (rss[-1][1] - warm) / warm * 100 if warm else 0.0
        print(f"\nload: {args.concurrency} keep-alive clients for {load['seconds']:.0f} s")
        print(f"  {load['requests']} requests, {load['throughput']:.0f} req/s, "
              f"p50 {load['p50']:.3f} ms, p99 {load['p99']:.3f} ms")
        print(f"  errors {load['errors']}   (target 0: {'OK' if load['errors'] == 0 else 'MISSED'})")
        print(f"  server RSS {warm / 1024:.1f} MiB after warm-up, {rss[-1][1] / 1024:.1f} MiB at "
              f"the end, peak {peak / 1024:.1f} MiB: growth {growth:+.1f}% (target < 10%: "
              f"{'OK' if growth < 10 else 'MISSED'})")

        seconds, requests, medium = bench_dast(url)
        print(f"\nbuilt-in DAST scan: {seconds:.2f} s, {requests} requests, {medium} finding(s) "
              f"medium or worse (target <= 30 s: {'OK' if seconds <= 30 else 'MISSED'})")
        alive = Client(url).post(body) == 200
        print(f"  server answers after the scan: {alive}")
        ok = over <= 1.0 and load["errors"] == 0 and growth < 10 and seconds <= 30 and alive
        return 0 if ok else 1
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
