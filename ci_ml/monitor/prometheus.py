"""Service health from Prometheus: error rate and latency quantiles of the served model.

The queries use the server's metric names (docs/serve.md): ``ci_ml_requests_total``
(counter by route, method, status) and ``ci_ml_request_duration_seconds`` (histogram
by route), restricted by the configured label selector (e.g. ``job="digits"``) and
to the inference routes. Each is evaluated over the window, at its end, through
Prometheus' HTTP API (``/api/v1/query``). The same expressions make the alerting
rules ``ci-ml deploy render`` writes (``ci_ml.monitor.alerts``), so the scheduled
check and the alerts agree on what an SLO breach is.
"""

from __future__ import annotations

import json
import math
import re
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime
from typing import Any

from ci_ml.monitor.interface import HealthError, HealthSource, ServiceHealth, SloCheck
from ci_ml.monitor.policy import LatencySlo, MonitorPolicy

REQUESTS = "ci_ml_requests_total"
DURATION = "ci_ml_request_duration_seconds"
# Inference routes: ci-ml's JSON route and the Open Inference Protocol's infer route.
DEFAULT_ROUTES = "/predict|/v2/models/.+/infer"
MAX_RESPONSE_BYTES = 8 << 20
_SELECTOR = re.compile(r'^\s*([a-zA-Z_][a-zA-Z0-9_]*\s*(=|!=|=~|!~)\s*"(?:[^"\\]|\\.)*"\s*'
                       r'(,\s*[a-zA-Z_][a-zA-Z0-9_]*\s*(=|!=|=~|!~)\s*"(?:[^"\\]|\\.)*"\s*)*)?$')


def check_selector(selector: str) -> str:
    """A PromQL label-matcher list (``job="x", env=~"prod.*"``); anything else is refused,
    so the config cannot splice arbitrary PromQL into the queries."""
    if not _SELECTOR.match(selector or ""):
        raise HealthError(f"monitor.prometheus.selector: {selector!r} is not a list of label "
                          'matchers like job="digits"')
    return selector.strip()


def prom_duration(seconds: float) -> str:
    return f"{max(1, int(round(seconds)))}s"


class Queries:
    """The PromQL of the SLOs over a range (``[5m]``, or the whole window)."""

    def __init__(self, selector: str = "", routes: str = DEFAULT_ROUTES) -> None:
        self.selector = check_selector(selector)
        route = f'route=~"{routes}"'
        self.matchers = ", ".join(x for x in (self.selector, route) if x)

    def requests(self, rng: str) -> str:
        return f"sum(increase({REQUESTS}{{{self.matchers}}}[{rng}]))"

    def error_rate(self, rng: str) -> str:
        errors = f'sum(rate({REQUESTS}{{{self.matchers}, status=~"5.."}}[{rng}]))'
        return f"({errors} or vector(0)) / sum(rate({REQUESTS}{{{self.matchers}}}[{rng}]))"

    def latency(self, quantile: float, rng: str) -> str:
        """The quantile in seconds (the histogram's unit)."""
        return (f"histogram_quantile({quantile:g}, sum by (le) "
                f"(rate({DURATION}_bucket{{{self.matchers}}}[{rng}])))")


class PrometheusHealth(HealthSource):
    name = "prometheus"

    def __init__(self, url: str, policy: MonitorPolicy, *, selector: str = "",
                 routes: str = DEFAULT_ROUTES, timeout: float = 10.0) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise HealthError(f"monitor.prometheus.url: {url!r} is not an http(s) URL")
        if parsed.username or parsed.password:
            raise HealthError("monitor.prometheus.url: put no credentials in the URL")
        self.url = url.rstrip("/")
        self.policy = policy
        self.queries = Queries(selector, routes)
        self.timeout = timeout

    def query(self, expr: str, at: datetime) -> float | None:
        """One instant query; the single sample's value, or None for an empty result."""
        params = urllib.parse.urlencode({"query": expr, "time": f"{at.timestamp():.3f}"})
        req = urllib.request.Request(f"{self.url}/api/v1/query?{params}",  # noqa: S310 - http(s) checked
                                     headers={"Accept": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310 - http(s) checked
                body = resp.read(MAX_RESPONSE_BYTES + 1)
        except urllib.error.HTTPError as exc:
            detail = _error_detail(exc.read(4096))
            raise HealthError(f"Prometheus at {self.url} refused a query (HTTP {exc.code}"
                              f"{': ' + detail if detail else ''})") from exc
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            raise HealthError(f"Prometheus at {self.url} did not answer ({reason})") from exc
        if len(body) > MAX_RESPONSE_BYTES:
            raise HealthError(f"Prometheus at {self.url}: answer over {MAX_RESPONSE_BYTES} bytes")
        return _scalar(body, self.url)

    def health(self, start: datetime, end: datetime) -> ServiceHealth:
        rng = prom_duration((end - start).total_seconds())
        requests = self.query(self.queries.requests(rng), end)
        policy = self.policy
        enough = requests is not None and requests >= policy.min_requests
        checks = []
        if policy.error_rate is not None:
            rate = self.query(self.queries.error_rate(rng), end) if requests else None
            checks.append(SloCheck("error_rate", rate, policy.error_rate, "",
                                   enough and rate is not None and rate > policy.error_rate))
        for slo in policy.latency:
            checks.append(self._latency(slo, rng, end, enough))
        note = "" if enough else (f"{0 if requests is None else requests:.0f} requests in the "
                                  f"window, fewer than slo.min_requests ({policy.min_requests}): "
                                  "not judged")
        return ServiceHealth(f"prometheus {self.url}", requests, tuple(checks), note)

    def _latency(self, slo: LatencySlo, rng: str, at: datetime, enough: bool) -> SloCheck:
        seconds = self.query(self.queries.latency(slo.quantile, rng), at)
        ms = seconds * 1000.0 if seconds is not None else None
        return SloCheck(slo.name, ms, slo.max_ms, "ms",
                        enough and ms is not None and ms > slo.max_ms)


def _error_detail(body: bytes) -> str:
    try:
        doc = json.loads(body)
        return str(doc.get("error", ""))[:200]
    except (ValueError, AttributeError):
        return ""


def _scalar(body: bytes, url: str) -> float | None:
    try:
        doc: Any = json.loads(body)
        if doc.get("status") != "success":
            raise HealthError(f"Prometheus at {url}: query failed ({doc.get('error', '?')})")
        data = doc["data"]
        kind, result = data["resultType"], data["result"]
        if kind == "scalar":
            raw = result[1]
        elif kind == "vector":
            if not result:
                return None
            if len(result) > 1:
                raise HealthError(f"Prometheus at {url}: expected one series, got {len(result)}")
            raw = result[0]["value"][1]
        else:
            raise HealthError(f"Prometheus at {url}: unexpected result type {kind!r}")
        value = float(raw)
    except HealthError:
        raise
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        raise HealthError(f"Prometheus at {url}: not a PromQL query answer ({exc!s})") from exc
    return value if math.isfinite(value) else None
