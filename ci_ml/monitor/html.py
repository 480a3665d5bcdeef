"""The monitoring section of the HTML report, with per-feature plots.

``monitor.html`` is that section on a page of its own; ``report.html`` includes the
same section when the out dir holds a ``monitor-report.json``. Plots compare the
reference's and the window's shares on the PSI bins: every drifted feature, then
the features with the highest PSI, and the predicted classes (or values).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ci_ml.monitor.report import MonitorReport
from ci_ml.resources import render_template, template_environment

MAX_FEATURE_PLOTS = 12


def _figure(width: float = 6.4, height: float = 3.2) -> Any:
    # The object API, not pyplot: no global state, no GUI backend, safe in any process.
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def _png(fig: Any) -> str:
    import base64
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=96, metadata={"Software": None})
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _bars(ax: Any, title: str, bins: Sequence[str], ref: Sequence[float | None],
          win: Sequence[float | None], drifted: bool) -> None:
    import numpy as np

    xs = np.arange(len(bins))
    ax.bar(xs - 0.2, [v or 0 for v in ref], width=0.4, label="reference", color="#9ecae1")
    ax.bar(xs + 0.2, [v or 0 for v in win], width=0.4, label="window",
           color="#d7301f" if drifted else "#3182bd")
    ax.set_title(title, fontsize=8, color="#b62324" if drifted else "#222")
    step = max(1, len(bins) // 6)
    ax.set_xticks(xs[::step], [b[:14] for b in bins][::step], fontsize=6, rotation=30)
    ax.tick_params(axis="y", labelsize=6)


def feature_plots(features: Sequence[Mapping[str, Any]]) -> str | None:
    """Small multiples of the most drifted features."""
    chosen = sorted(features, key=lambda f: (not f["drifted"], -(f["psi"] or 0)))
    chosen = [f for f in chosen if f["bins"]][:MAX_FEATURE_PLOTS]
    if not chosen:
        return None
    cols = 3
    rows = (len(chosen) + cols - 1) // cols
    fig = _figure(9.0, 2.0 * rows + 0.4)
    for i, f in enumerate(chosen):
        ax = fig.add_subplot(rows, cols, i + 1)
        _bars(ax, f"{f['name']} (PSI {f['psi'] or 0:.2f}{', drifted' if f['drifted'] else ''})",
              f["bins"], f["reference_shares"], f["window_shares"], f["drifted"])
        if i == 0:
            ax.legend(fontsize=6)
    fig.suptitle("Reference vs window, share of rows per bin (PSI bins)", fontsize=9)
    # Fixed spacing: tight_layout measures every label and costs more than the drawing.
    fig.subplots_adjust(left=0.05, right=0.98, bottom=0.08, top=0.92, hspace=0.7, wspace=0.25)
    return str(_png(fig))


def prediction_plot(predictions: Mapping[str, Any] | None) -> str | None:
    if not predictions or not predictions.get("bins"):
        return None
    fig = _figure(6.4, 2.6)
    ax = fig.add_subplot()
    _bars(ax, f"Predicted classes (PSI {predictions['psi'] or 0:.3f})", predictions["bins"],
          predictions["reference_shares"], predictions["window_shares"],
          bool(predictions["drifted"]))
    ax.legend(fontsize=7)
    return str(_png(fig))


def monitor_context(doc: Mapping[str, Any], plots: bool = True) -> dict[str, Any]:
    """What the template's monitoring section needs, from a monitor-report.json document."""
    features = doc.get("drift", {}).get("features", [])
    return {
        "doc": doc, "decision": doc.get("decision", {}), "service": doc.get("service"),
        "quality": doc.get("quality"), "predictions": doc.get("predictions"),
        "top": sorted(features, key=lambda f: (not f["drifted"], -(f["psi"] or 0)))[:20],
        "features": len(features), "findings": doc.get("findings", []),
        "plots": {"features": feature_plots(features) if plots else None,
                  "predictions": prediction_plot(doc.get("predictions")) if plots else None},
    }


def render_monitor_html(report: MonitorReport) -> str:
    env = template_environment(autoescape=True)
    return render_template(env, "monitor.html.j2", monitoring=monitor_context(report.to_json()))
