"""``ci-ml monitor``: drift, quality and SLOs of the served model; the retraining trigger."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

import click

from ci_ml.cli.common import common_options
from ci_ml.errors import UsageError


@click.command("monitor")
@click.option("--log", "logs", multiple=True, type=click.Path(path_type=Path),
              help="Request log (JSON lines; repeatable). Default: monitor.log, else "
                   "serve.log.path.")
@click.option("--labels", "labels", multiple=True, type=click.Path(path_type=Path),
              help="Late labels, CSV or JSON lines keyed by request id (repeatable). "
                   "Default: monitor.labels.")
@click.option("--model", "model_path", type=click.Path(path_type=Path), default=None,
              help="The served ONNX model (model.json beside it). Default: monitor.model, "
                   "serve.model, else <out>/candidate/model.onnx.")
@click.option("--model-version", default=None, help="Only log lines of this model version.")
@click.option("--stage", type=click.Choice(["staging", "production"]), default=None,
              help="Monitor the model the registry holds in this stage (default: "
                   "monitor.stage); it is copied to <out>/monitor-model/.")
@click.option("--reference", "reference", type=click.Path(path_type=Path), default=None,
              help="Reference file (default: the profile stored with the model, else computed "
                   "from data.train).")
@click.option("--window", default=None, metavar="DURATION",
              help="How far back the window reaches, e.g. 30m, 24h, 7d (default: monitor.window).")
@click.option("--until", default=None, metavar="TIME",
              help="End of the window, RFC 3339 (default: now).")
@click.option("--prometheus-url", default=None, metavar="URL",
              help="Prometheus to query for the SLOs (default: monitor.prometheus.url; none: the "
                   "request log's sampled figures).")
@click.option("--trigger", "fire", is_flag=True,
              help="When retraining is due, start the training pipeline (monitor.trigger).")
@click.option("--no-html", is_flag=True, help="Skip monitor.html (and its plots).")
@common_options
def monitor(logs: tuple[Path, ...], labels: tuple[Path, ...], model_path: Path | None,
            model_version: str | None, stage: str | None, reference: Path | None,
            window: str | None,
            until: str | None, prometheus_url: str | None, fire: bool, no_html: bool,
            config_path: Path | None, out_dir: Path, quiet: bool) -> None:
    """Compare a window of served traffic with the training reference; decide on retraining.

    Per-feature drift (KS and PSI for numbers, chi-square and PSI for categories, Holm
    correction), prediction drift, values never seen in training, accuracy or error on late
    labels, and the service's error rate and latency against the SLOs. Writes
    monitor-report.json and monitor.html. Exit 0: healthy (or too little data to judge, a
    finding); 1: retraining due or an SLO breached, with the reasons in the report's
    "decision"; 2: bad input; 3: Prometheus or the trigger failed.
    """
    from ci_ml.config import load_config
    from ci_ml.console import Reporter
    from ci_ml.extras import require

    require("monitor", "ci-ml monitor")
    from ci_ml.monitor.logs import Window, parse_duration, parse_time
    from ci_ml.monitor.policy import MonitorPolicy
    from ci_ml.monitor.prometheus import PrometheusHealth
    from ci_ml.monitor.report import reason_lines
    from ci_ml.monitor.run import MonitorRequest, run_monitor
    from ci_ml.monitor.triggers import make_trigger
    from ci_ml.monitor.wiring import resolve_paths
    from ci_ml.pipeline.runner import check_out_dir

    config = load_config(config_path)
    check_out_dir(out_dir)
    reporter = Reporter(quiet=quiet)
    section = config.section("monitor")
    policy = MonitorPolicy.from_config(section)
    end = datetime.now(UTC)
    if until is not None:
        parsed = parse_time(until)
        if parsed is None:
            raise UsageError(f"--until: {until!r} is not an RFC 3339 time with an offset, "
                             "e.g. 2026-12-07T10:00:00Z")
        end = parsed
    span = parse_duration(window or policy.window, "--window" if window else "monitor.window")
    paths = resolve_paths(config, out_dir, logs=logs, labels=labels, model=model_path,
                          reference=reference, stage=stage)
    url = prometheus_url or section["prometheus"]["url"]
    health = (PrometheusHealth(url, policy, selector=section["prometheus"]["selector"],
                               routes=section["prometheus"]["routes"],
                               timeout=float(section["prometheus"]["timeout_s"]))
              if url else None)
    trigger = make_trigger(section["trigger"]) if fire else None
    if fire and trigger is None:
        raise UsageError("--trigger: monitor.trigger.kind is none in the config; set a trigger")
    request = MonitorRequest(
        logs=paths.logs, labels=paths.labels, window=Window(end - span, end), policy=policy,
        out_dir=out_dir, model=paths.model, model_version=model_version or
        section["model_version"], reference=paths.reference, train=paths.train,
        target=paths.target, max_line_bytes=int(section["max_line_bytes"]),
        max_labels=int(section["max_labels"]), html=not no_html)
    if paths.version is not None:
        # The digest picks the model's lines; the registry version is only reported.
        reporter.info(f"monitoring v{paths.version} of the registry's {stage or section['stage']}")
    report = run_monitor(request, health=health, trigger=trigger, progress=reporter.info)
    s = report.inputs
    reporter.info(f"window: {s.in_window} requests, {s.rows} rows "
                  f"({s.corrupt} corrupt lines, {s.other_model} of another model skipped); "
                  f"{s.labels_matched} labels joined")
    for line in reason_lines(report.decision.reasons):
        click.echo(line)
    for finding in report.findings:
        if finding.rule in ("window_too_small", "corrupt_log_lines", "other_model",
                            "labels_unknown_ids", "bad_rows", "labels_bad_rows"):
            reporter.warn(finding.title)
    if report.trigger is not None:
        click.echo(f"triggered retraining: {report.trigger.kind} {report.trigger.url} "
                   f"(HTTP {report.trigger.status})")
    click.echo(f"monitor: {report.decision.summary()}; report in {out_dir / 'monitor-report.json'}")
    sys.exit(report.decision.exit_code)


COMMANDS = (monitor,)
