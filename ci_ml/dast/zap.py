"""The ZAP engine: a running ZAP daemon, driven through its Python client ``zapv2``.

This needs a ZAP daemon (``zap.sh -daemon``, or the ``zaproxy/zap-stable`` container)
reachable at ``zap_url``; ZAP itself cannot run on every machine (it is Java and
ships from GitHub/GHCR), so CI runs it as a service container. The scan follows
ZAP's own baseline/API-scan order: import the OpenAPI document, spider, wait for
the passive scanner, optionally active-scan, then read the alerts.

ZAP's two documented outputs both become ``Alert``s here: the API's
``/JSON/core/view/alerts/`` items and the ``traditional-json`` report
(``site[].alerts[].instances[]``, what ``zap-baseline.py -J`` writes).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from ci_ml.dast.interface import (
    Alert,
    AlertConfidence,
    DastEngine,
    DastError,
    DastOptions,
    DastReport,
    DastTarget,
    Risk,
)

T = TypeVar("T")
# ZAP answers API errors as {"code": ..., "message": ...}; zapv2 hands back the code string.
API_ERROR_CODES = frozenset({
    "bad_api_key", "no_access", "missing_parameter", "illegal_parameter", "does_not_exist",
    "bad_format", "bad_action", "bad_view", "bad_other", "internal_error", "bad_type",
    "bad_external_data", "bad_state", "url_not_found", "url_not_in_context", "scan_in_progress",
    "disabled", "already_exists", "bad_pconn", "context_not_found", "user_not_found",
    "no_implementor", "bad_script_format", "script_not_found"})
PAGE = 500


def _int(value: Any, default: int = -1) -> int:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return default


def alert_from_api(item: Mapping[str, Any]) -> Alert:
    """One ``/JSON/core/view/alerts/`` item."""
    try:
        return Alert(
            plugin_id=str(item["pluginId"]), name=str(item.get("name") or item.get("alert") or ""),
            risk=Risk.parse(item["risk"]), confidence=AlertConfidence.parse(item["confidence"]),
            url=str(item["url"]), method=str(item.get("method") or "GET"),
            param=str(item.get("param") or ""), attack=str(item.get("attack") or ""),
            evidence=str(item.get("evidence") or ""), alert_ref=str(item.get("alertRef") or ""),
            description=str(item.get("description") or ""),
            solution=str(item.get("solution") or ""), reference=str(item.get("reference") or ""),
            other=str(item.get("other") or ""), cwe=_int(item.get("cweid")),
            wasc=_int(item.get("wascid")))
    except (KeyError, TypeError, AttributeError) as exc:
        raise DastError(f"ZAP alert without the field {exc}; not ZAP's alerts API format") from None


def alerts_from_report(doc: Any, source: str = "ZAP report") -> tuple[Alert, ...]:
    """Every instance of every alert of a ``traditional-json`` report."""
    if not isinstance(doc, Mapping) or not isinstance(doc.get("site"), list):
        raise DastError(f"{source}: not a ZAP traditional-json report (no 'site' list)")
    out: list[Alert] = []
    try:
        for site in doc["site"]:
            for item in site.get("alerts") or []:
                instances = item.get("instances") or [{"uri": site.get("@name", "")}]
                for inst in instances:
                    out.append(Alert(
                        plugin_id=str(item["pluginid"]),
                        name=str(item.get("name") or item.get("alert") or ""),
                        risk=Risk(_int(item["riskcode"])),
                        confidence=AlertConfidence(_int(item.get("confidence"), 2)),
                        url=str(inst.get("uri") or ""), method=str(inst.get("method") or "GET"),
                        param=str(inst.get("param") or ""), attack=str(inst.get("attack") or ""),
                        evidence=str(inst.get("evidence") or ""),
                        alert_ref=str(item.get("alertRef") or ""),
                        description=str(item.get("desc") or ""),
                        solution=str(item.get("solution") or ""),
                        reference=str(item.get("reference") or ""),
                        other=str(inst.get("otherinfo") or item.get("otherinfo") or ""),
                        cwe=_int(item.get("cweid")), wasc=_int(item.get("wascid"))))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise DastError(f"{source}: malformed alert ({type(exc).__name__}: {exc})") from None
    return tuple(out)


def read_report(path: Path) -> tuple[str, tuple[Alert, ...]]:
    """(ZAP version, alerts) from a traditional-json report file."""
    try:
        doc = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise DastError(f"{path}: ZAP report not found") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DastError(f"{path}: not a JSON ZAP report ({exc})") from exc
    return str(doc.get("@version", "unknown")), alerts_from_report(doc, str(path))


class ZapEngine(DastEngine):
    name = "zap"

    def __init__(self, zap_url: str, api_key: str | None = None, key_env: str | None = None,
                 poll_s: float = 1.0) -> None:
        from zapv2 import ZAPv2

        self.zap_url = zap_url.rstrip("/")
        self.key_env = key_env
        self.poll_s = poll_s
        # zapv2 sends every API call through ZAP's proxy port; the key goes in a header.
        self.zap = ZAPv2(apikey=api_key, proxies={"http": self.zap_url, "https": self.zap_url})
        self._version: str | None = None

    # -- calls: every failure is a DastError that never contains the API key ---------------
    def _call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        import requests

        try:
            result = fn(*args, **kwargs)
        except requests.RequestException as exc:
            raise DastError(f"ZAP at {self.zap_url} unreachable while {what} "
                            f"({type(exc).__name__}); is a ZAP daemon running there?") from None
        except (ValueError, KeyError, StopIteration, TypeError) as exc:
            raise DastError(f"ZAP at {self.zap_url} gave an unexpected answer while {what} "
                            f"({type(exc).__name__})") from None
        if isinstance(result, str) and result in API_ERROR_CODES:
            hint = ""
            if result == "bad_api_key":
                hint = (f"; set the API key in ${self.key_env}" if self.key_env else
                        "; pass the name of the variable holding the key with --zap-api-key-env")
            raise DastError(f"ZAP refused {what}: {result}{hint}")
        return result

    def version(self) -> str:
        if self._version is None:
            self._version = str(self._call("reading its version", lambda: self.zap.core.version))
        return f"ZAP {self._version}"

    def _wait(self, what: str, progress: Callable[[], Any], done: Callable[[int], bool],
              deadline: float, stop: Callable[[], Any] | None, notes: list[str]) -> None:
        while True:
            value = _int(self._call(what, progress))
            if value < 0:
                raise DastError(f"ZAP gave a non-numeric progress while {what}")
            if done(value):
                return
            if time.monotonic() > deadline:
                if stop is not None:
                    self._call(f"stopping {what}", stop)
                notes.append(f"{what} stopped at max_duration_s: results are partial")
                return
            time.sleep(self.poll_s)

    def alerts(self, base_url: str) -> tuple[Alert, ...]:
        out: list[Alert] = []
        start = 0
        while True:
            page = self._call("reading alerts", self.zap.core.alerts, baseurl=base_url,
                              start=start, count=PAGE)
            if not isinstance(page, list):
                raise DastError("ZAP's alerts answer is not a list")
            out.extend(alert_from_api(item) for item in page)
            if len(page) < PAGE:
                return tuple(out)
            start += PAGE

    def scan(self, target: DastTarget, options: DastOptions) -> DastReport:
        started = time.monotonic()
        deadline = started + options.max_duration_s
        notes: list[str] = []
        version = self.version()
        url = target.url
        self._call("accessing the target", self.zap.urlopen, url)
        if target.openapi_url:
            warnings = self._call("importing the OpenAPI document", self.zap.openapi.import_url,
                                  url=target.openapi_url, hostoverride=url)
            if isinstance(warnings, Iterable) and not isinstance(warnings, str):
                notes.extend(f"OpenAPI import: {w}" for w in warnings)
        scan_id = str(self._call("starting the spider", self.zap.spider.scan, url=url,
                                 recurse=True))
        if _int(scan_id) < 0:
            raise DastError(f"ZAP did not start the spider (answered {scan_id[:40]!r})")
        self._wait("spidering", lambda: self.zap.spider.status(scan_id), lambda v: v >= 100,
                   deadline, lambda: self.zap.spider.stop(scan_id), notes)
        self._wait("passive scanning", lambda: self.zap.pscan.records_to_scan, lambda v: v == 0,
                   deadline, None, notes)
        if options.active:
            active_id = str(self._call("starting the active scan", self.zap.ascan.scan, url=url,
                                       recurse=True))
            if _int(active_id) < 0:
                raise DastError(f"ZAP did not start the active scan (answered {active_id[:40]!r})")
            self._wait("active scanning", lambda: self.zap.ascan.status(active_id),
                       lambda v: v >= 100, deadline, lambda: self.zap.ascan.stop(active_id), notes)
        alerts = self.alerts(url)
        return DastReport(engine=self.name, engine_version=version, target=url, alerts=alerts,
                          duration_s=time.monotonic() - started, notes=tuple(notes))


class ZapReportEngine(DastEngine):
    """Alerts from a report ZAP already wrote (``zap-baseline.py -J``, the ZAP actions)."""

    name = "zap"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._version, self._alerts = read_report(path)

    def version(self) -> str:
        return f"ZAP {self._version}"

    def scan(self, target: DastTarget, options: DastOptions) -> DastReport:
        return DastReport(engine=self.name, engine_version=self.version(), target=target.url,
                          alerts=self._alerts, notes=(f"imported from {self.path.name}",))
