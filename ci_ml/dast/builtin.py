"""The built-in DAST engine: ZAP-style passive checks plus active probes from the model signature.

It runs where no ZAP daemon is available (this machine, a laptop, any CI). It is
not a general web scanner: it crawls the paths the OpenAPI document lists, then
attacks the prediction endpoint the way a hostile client of a model service would.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import ci_ml
from ci_ml.dast import desync, passive
from ci_ml.dast.active import Probe, baseline_request, build_probes, detect_evidence
from ci_ml.dast.catalog import rule
from ci_ml.dast.http import Client, Exchange
from ci_ml.dast.interface import Alert, DastEngine, DastOptions, DastReport, DastTarget


class BuiltinEngine(DastEngine):
    name = "builtin"

    def version(self) -> str:
        return f"ci-ml {ci_ml.__version__}"

    def scan(self, target: DastTarget, options: DastOptions) -> DastReport:
        started = time.monotonic()
        client = Client(target.url, options.timeout_s)
        https = client.https
        alerts: dict[tuple[str, str, str, str], Alert] = {}
        notes: list[str] = []

        def keep(found: list[Alert]) -> None:
            for alert in found:
                key = alert.key()
                if key not in alerts or alert.risk > alerts[key].risk:
                    alerts[key] = alert

        # The crawl: passive checks see normal traffic only, as in ZAP (its passive scanner
        # does not look at active-scan messages): the listed GET paths and one valid prediction.
        for path in target.paths:
            keep(passive.check(client.send("GET", path), https))
        if target.spec is not None and target.spec.n_features > 0:
            keep(passive.check(client.send(*baseline_request(target.spec)), https))
        if target.spec is None:
            notes.append("no prediction endpoint in the target's OpenAPI document: "
                         "signature-based probes skipped")
        if options.active:
            health = "/health" if "/health" in target.paths else "/"
            self._active(client, target, options, started, health, keep, notes)
        return DastReport(engine=self.name, engine_version=self.version(), target=target.url,
                          alerts=tuple(sorted(alerts.values(),
                                              key=lambda a: (-a.risk, a.plugin_id, a.url))),
                          requests=client.count, duration_s=time.monotonic() - started,
                          notes=tuple(notes))

    def _active(self, client: Client, target: DastTarget, options: DastOptions, started: float,
                health: str, keep: Callable[[list[Alert]], None], notes: list[str]) -> None:
        # Framing first, on connections of their own: a desync would poison later probes.
        predict = target.spec.predict_path if target.spec else "/predict"
        keep(list(desync.check(target.url, predict, health, min(options.timeout_s, 5.0))))
        for probe in build_probes(target.spec):
            if time.monotonic() - started > options.max_duration_s:
                notes.append(f"stopped after max_duration_s={options.max_duration_s:g}: "
                             "some probes did not run")
                return
            ex = client.send(probe.method, probe.path, probe.body, probe.header_dict())
            keep(passive.error_disclosure(ex))
            found, crashed = self._judge(client, probe, ex, health, options)
            keep(found)
            if crashed:
                notes.append(f"the target stopped answering after: {probe.attack}; "
                             "remaining probes skipped")
                return

    def _judge(self, client: Client, probe: Probe, ex: Exchange, health: str,
               options: DastOptions) -> tuple[list[Alert], bool]:
        url, method = ex.url, probe.method
        attack = probe.attack
        if not ex.answered:
            if not client.alive(health):
                return [rule("190001").alert(url, method=method, param=probe.kind, attack=attack,
                                             evidence=f"no answer ({ex.error}), then "
                                                      f"{client.url(health)} unreachable")], True
            if ex.error == "timeout":
                return [rule("190002").alert(url, method=method, param=probe.kind, attack=attack,
                                             evidence=f"no answer within {options.timeout_s:g}s")
                        ], False
            return [], False  # dropped the connection but stays up: a rejection, if a rude one
        status = ex.status or 0
        found: list[Alert] = []
        # 501 is a proper "method not implemented"; a 503 with Retry-After is load shedding.
        if status >= 500 and status != 501 and not (status == 503 and ex.header("Retry-After")):
            found.append(rule("40008").alert(url, method=method, param=probe.kind, attack=attack,
                                             evidence=ex.status_line))
        if 200 <= status < 300 and probe.accept_rule:
            found.append(rule(probe.accept_rule).alert(
                url, method=method, param=probe.kind, attack=attack,
                evidence=f"{ex.status_line} to {attack}"))
        hit = detect_evidence(probe.detect, ex.text, ex.is_html)
        if hit:
            plugin, evidence = hit
            found.append(rule(plugin).alert(url, method=method, param=probe.kind, attack=attack,
                                            evidence=evidence))
        return found, False
