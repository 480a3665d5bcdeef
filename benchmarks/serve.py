"""Model server benchmark: the stdlib server this project had and today's, side by side.

    python benchmarks/serve.py [--model candidate/model.onnx] [--duration 10] [--baseline REF]

Without --model it trains and exports the bundled example first (fixtures/example, in a
temporary directory). Every server runs in its own process (`python -m ci_ml.serve`, the
container's entry point) on a loopback port; clients use keep-alive connections with
TCP_NODELAY, from threads of this process. Measured in this one run:

1. bare: ``InferenceSession.run`` on the prepared batch-1 input, in this process, before
   and after the served runs (the median of both brackets the served numbers);
2. per server, one client sending POST /predict with the same sample sequentially, in
   blocks the servers take turns at: p50 and p99 minus the bare run's are the server's
   overhead;
3. per server, 1, 4 and 16 keep-alive clients for --duration seconds each, in rounds of
   2 s where the servers take turns in a rotating order (a shared machine's load drifts:
   each server sees the same drift): median requests/s of the rounds, p50/p99 of all
   requests, the server's CPU time per request (all its processes and threads: what a
   request costs, whatever share of the CPU the scheduler gave the server), errors
   (target: none);
4. the new server's RSS (all its processes) through the load (target: growth under 10%),
   and the built-in DAST scan of it (target: at most 30 s, nothing medium or worse);
5. the default server (one worker per CPU) against stdlib: p50 overhead no higher and
   requests/s with several clients no lower (target: at least a match). Every line gives
   its ratio to stdlib's.

The servers: "stdlib" is ci_ml/serve at --baseline (default: the last commit with the
http.server implementation), extracted from git into a temporary directory; "1 worker"
and "N workers" are today's, with --workers 1 and one worker per CPU.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ci_ml.serve.server import load_model  # noqa: E402
from ci_ml.serve.settings import ServeSettings  # noqa: E402

URL = re.compile(r"http://127\.0\.0\.1:\d+")
ROUND_S = 2.0


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def build_example_model(work: Path) -> Path:
    project = work / "example"
    shutil.copytree(REPO / "fixtures" / "example", project,
                    ignore=shutil.ignore_patterns(".ci-ml-cache"))
    env = {**os.environ, "PYTHONPATH": str(REPO), "CI_ML_CACHE": str(work / "cache")}
    subprocess.run([sys.executable, "-m", "ci_ml", "prune", "--config",
                    str(project / "ci-ml.yaml"), "--out", str(work / "out"), "--quiet"],
                   check=True, env=env)
    return work / "out" / "candidate" / "model.onnx"


def baseline_ref() -> str:
    """The parent of the commit that removed the http.server implementation."""
    out = subprocess.run(["git", "log", "--format=%H", "-S", "ThreadingHTTPServer", "--",
                          "ci_ml/serve/server.py"], cwd=REPO, capture_output=True, text=True,
                         check=True).stdout.split()
    if not out:
        raise SystemExit("no commit with the http.server implementation; pass --baseline")
    return out[0] + "^"


def extract_baseline(ref: str, dest: Path) -> Path:
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", ref, "ci_ml/__init__.py", "ci_ml/errors.py",
                              "ci_ml/serve"], cwd=REPO, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[str]
    url: str
    stderr: list[str] = field(default_factory=list)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)


def start_server(name: str, model: Path, work: Path, pythonpath: str,
                 workers: int | None) -> Server:
    settings = work / f"serve-{len(list(work.glob('serve-*.json')))}.json"
    settings.write_text(json.dumps({"host": "127.0.0.1", "port": 0, "threads": 1,
                                    "limits": {"max_connections": 64}}))
    cmd = [sys.executable, "-m", "ci_ml.serve", "--model", str(model), "--settings",
           str(settings)]
    if workers is not None:
        cmd += ["--workers", str(workers)]
    # cwd too: ``python -m`` puts the working directory first on sys.path.
    proc = subprocess.Popen(cmd, env={**os.environ, "PYTHONPATH": pythonpath}, cwd=pythonpath,
                            text=True, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    line = proc.stderr.readline()
    match = URL.search(line)
    if not match:
        proc.kill()
        raise SystemExit(f"{name} did not start: {line}{proc.stderr.read()}")
    server = Server(name, proc, match.group(0))
    # Keep draining stderr so the server never blocks on a full pipe.
    threading.Thread(target=lambda: server.stderr.extend(proc.stderr or []), daemon=True).start()
    client = Client(server.url)       # the workers are up when one answers
    deadline = time.monotonic() + 60
    while True:
        try:
            client.post(b'{"inputs": []}')
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
            client = Client(server.url)
    return server


class Client:
    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=30)
        self.conn.connect()
        assert self.conn.sock is not None
        self.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def post(self, body: bytes) -> int:
        self.conn.request("POST", "/predict", body=body,
                          headers={"Content-Type": "application/json"})
        resp = self.conn.getresponse()
        resp.read()
        return resp.status


def family(pid: int) -> list[int]:
    """A process and its children (the workers)."""
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    return pids


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and its live children, all threads."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for p in family(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
        except (OSError, IndexError, ValueError):
            pass
    return total


def rss_kb(pid: int) -> int:
    """RSS of a process and its children (the workers)."""
    total = 0
    for p in family(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def bench_bare(path: Path, raw: list[float], n: int) -> list[float]:
    model = load_model(path, ServeSettings())
    batch = model.decoder.decode_rows([raw])
    for _ in range(200):
        model.session.run([model.output_name], batch.feed)
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        model.session.run([model.output_name], batch.feed)
        times.append((time.perf_counter() - t0) * 1000)
    return times


def bench_sequential(servers: list[Server], body: bytes, n: int,
                     blocks: int = 10) -> dict[str, list[float]]:
    """``n`` requests per server from one keep-alive client each, in ``blocks`` blocks in
    which the servers take turns in a rotating order (as the load rounds): a drift of the
    machine's speed during the run falls on every server alike."""
    clients = {s.name: Client(s.url) for s in servers}
    for client in clients.values():
        for _ in range(200):
            client.post(body)
    times: dict[str, list[float]] = {s.name: [] for s in servers}
    per_block = max(1, n // blocks)
    for i in range(blocks):
        for s in servers[i % len(servers):] + servers[:i % len(servers)]:
            client = clients[s.name]
            for _ in range(per_block):
                t0 = time.perf_counter()
                status = client.post(body)
                times[s.name].append((time.perf_counter() - t0) * 1000)
                assert status == 200, status
    return times


def bench_load(url: str, body: bytes, duration: float, clients: int,
               pid: int | None = None) -> dict[str, object]:
    stop = time.monotonic() + duration
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    rss: list[int] = []

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

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    started = time.monotonic()
    for t in threads:
        t.start()
    while pid is not None and time.monotonic() < stop:
        rss.append(rss_kb(pid))
        time.sleep(min(1.0, max(0.0, stop - time.monotonic())))
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    flat = [v for lat in latencies for v in lat]
    return {"requests": len(flat), "errors": sum(errors), "rps": len(flat) / elapsed,
            "p50": percentile(flat, 50), "p99": percentile(flat, 99), "rss": rss, "lat": flat}


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
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--model", type=Path)
    parser.add_argument("--duration", type=float, default=20.0,
                        help="seconds per server and client count (in rounds of 2 s)")
    parser.add_argument("--clients", default="1,4,16")
    parser.add_argument("--requests", type=int, default=3000, help="sequential requests")
    parser.add_argument("--baseline", help="git ref of the stdlib server (default: found)")
    args = parser.parse_args()
    # SIGTERM unwinds like Ctrl-C, so the servers started here are stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(130))
    work = Path(tempfile.mkdtemp(prefix="ci-ml-bench-"))
    servers: list[Server] = []
    try:
        model_path = args.model or build_example_model(work)
        model = load_model(model_path, ServeSettings())
        spec = model.decoder.protocol_inputs()[0]
        n = int(np.prod(spec.sample_shape))
        test_csv = REPO / "fixtures" / "example" / "data" / "test.csv"
        raw = [float(v) for v in test_csv.read_text().splitlines()[1].split(",")[:n]]
        body = json.dumps({"inputs": [raw]}).encode()
        ref = args.baseline or baseline_ref()
        old = extract_baseline(ref, work / "baseline")
        cpus = ServeSettings(workers=0).worker_count
        servers = [start_server("stdlib", model_path, work, str(old), None),
                   start_server("1 worker", model_path, work, str(REPO), 1),
                   start_server(f"{cpus} workers", model_path, work, str(REPO), cpus)]
        print(f"model {model_path} {list(spec.shape)}; baseline {ref}; load average "
              f"{os.getloadavg()[0]:.1f}")

        bare = bench_bare(model_path, raw, args.requests)
        seq = bench_sequential(servers, body, args.requests)
        bare += bench_bare(model_path, raw, args.requests)
        bare_p50, bare_p99 = statistics.median(bare), percentile(bare, 99)
        print(f"\nbatch 1, {args.requests} sequential requests per server, one keep-alive "
              "client each, in 10 blocks the servers take turns at")
        print(f"  {'bare onnxruntime run':<22} p50 {bare_p50:7.3f} ms  p99 {bare_p99:7.3f} ms")
        overhead = {name: percentile(times, 50) - bare_p50 for name, times in seq.items()}
        for name, times in seq.items():
            p50, p99 = percentile(times, 50), percentile(times, 99)
            print(f"  {name:<22} p50 {p50:7.3f} ms  p99 {p99:7.3f} ms   overhead p50 "
                  f"{p50 - bare_p50:+.3f} ms  p99 {p99 - bare_p99:+.3f} ms   "
                  f"x{overhead[name] / overhead['stdlib']:.2f} of stdlib's")
        default = servers[-1].name      # one worker per CPU: the default
        misses = [] if overhead[default] <= overhead["stdlib"] else ["p50 overhead"]

        levels = [int(c) for c in args.clients.split(",")]
        rounds = max(1, round(args.duration / ROUND_S))
        print(f"\nkeep-alive clients: per server {rounds} rounds of {ROUND_S:g} s, the servers "
              "taking turns in a rotating order (median req/s of the rounds; latencies pooled)")
        errors = 0
        rss_seen: list[int] = []
        for clients in levels:
            results: dict[str, list[dict[str, object]]] = {s.name: [] for s in servers}
            for i in range(rounds):
                for s in servers[i % len(servers):] + servers[:i % len(servers)]:
                    watch = s.proc.pid if s is servers[-1] else None
                    cpu0 = cpu_s(s.proc.pid)
                    r = bench_load(s.url, body, ROUND_S, clients, watch)
                    r["cpu"] = cpu_s(s.proc.pid) - cpu0
                    results[s.name].append(r)
                    errors += int(r["errors"])  # type: ignore[call-overload]
                    rss = r["rss"]
                    if isinstance(rss, list):
                        rss_seen += rss
            rps_of: dict[str, float] = {}
            for s in servers:
                rs = results[s.name]
                rps = statistics.median(float(r["rps"]) for r in rs)  # type: ignore[arg-type]
                rps_of[s.name] = rps
                lat = [v for r in rs for v in r["lat"]]  # type: ignore[attr-defined]
                errs = sum(int(r["errors"]) for r in rs)  # type: ignore[call-overload]
                cpu = sum(float(r["cpu"]) for r in rs)  # type: ignore[arg-type]
                n_req = sum(int(r["requests"]) for r in rs)  # type: ignore[call-overload]
                print(f"  {clients:>2} clients  {s.name:<10} {rps:7.0f} req/s  p50 "
                      f"{percentile(lat, 50):6.2f} ms  p99 {percentile(lat, 99):6.2f} ms  "
                      f"server CPU {cpu / max(n_req, 1) * 1e6:4.0f} us/request  errors {errs}  "
                      f"x{rps / rps_of['stdlib']:.2f} of stdlib's req/s")
            if clients > 1 and rps_of[default] < rps_of["stdlib"]:
                misses.append(f"req/s at {clients} clients")
        growth = ((rss_seen[-1] - rss_seen[1]) / rss_seen[1] * 100) if len(rss_seen) > 2 else 0.0
        print(f"  errors {errors} (target 0: {'OK' if errors == 0 else 'MISSED'}); "
              f"RSS growth of {servers[-1].name} {growth:+.1f}% (target < 10%)")
        print(f"  {default} (the default) against stdlib, p50 overhead and req/s with several "
              f"clients (target: at least a match): "
              f"{'OK' if not misses else 'MISSED: ' + ', '.join(misses)}")

        seconds, requests, medium = bench_dast(servers[-1].url)
        print(f"\nbuilt-in DAST scan of {servers[-1].name}: {seconds:.2f} s, {requests} HTTP "
              f"requests, {medium} finding(s) medium or worse (target <= 30 s, none)")
        codes = {s.name: s.stop() for s in servers}
        servers = []
        print(f"exit codes after SIGTERM: {codes}")
        ok = errors == 0 and growth < 10 and seconds <= 30 and medium == 0 and \
            not any(codes.values()) and not misses
        return 0 if ok else 1
    finally:
        for s in servers:
            s.proc.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
