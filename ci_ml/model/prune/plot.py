"""The trade-off plot: accuracy against measured speedup for every setting tried."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ci_ml.model.prune.result import PruneResult


def plot_tradeoff(result: PruneResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = result.settings
    batches = list(s.latency_batches)
    fig, axes = plt.subplots(1, len(batches), figsize=(5.2 * len(batches), 4.2), dpi=110,
                             squeeze=False)
    floor = result.base_accuracy - s.max_accuracy_drop
    accs = [t.accuracy for t in result.trials] + [result.base_accuracy, floor]
    for ax, b in zip(axes[0], batches, strict=True):
        ax.scatter([1.0], [result.base_accuracy], marker="s", color="black", zorder=3,
                   label="base (unpruned)")
        pts = [t for t in result.trials if b in t.speedup]
        x = {id(t): t.sure_speedup[b] for t in pts}
        ok = [t for t in pts if t.within_budget]
        over = [t for t in pts if not t.within_budget]
        if ok:
            ax.scatter([x[id(t)] for t in ok], [t.accuracy for t in ok], color="tab:green",
                       zorder=3, label="tried, within budget")
        if over:
            ax.scatter([x[id(t)] for t in over], [t.accuracy for t in over],
                       color="tab:red", marker="x", zorder=3, label="tried, over budget")
        for k, t in enumerate(pts):
            ax.annotate(f"{t.ratio:.2f}", (x[id(t)], t.accuracy), fontsize=7,
                        textcoords="offset points", xytext=(4, 5 if k % 2 == 0 else -11))
            if t.chosen:
                ax.scatter([x[id(t)]], [t.accuracy], s=260, facecolors="none",
                           edgecolors="tab:blue", linewidths=1.8, zorder=4, label="chosen")
        ax.axhline(floor, color="tab:red", ls="--", lw=1,
                   label=f"budget: -{s.max_accuracy_drop} points")
        if s.target_speedup and b == s.speedup_batch:
            ax.axvline(s.target_speedup, color="tab:blue", ls=":", lw=1,
                       label=f"target {s.target_speedup}x")
        ax.set_xlabel(f"ONNX Runtime speedup at batch {b} (x, 1 thread; "
                      "lower of wall / CPU)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_ylim(min(accs) - 0.4, max(accs) + 0.3)
        ax.grid(alpha=0.3)
    legend: dict[str, Any] = {}
    for ax in axes[0]:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(label, handle)
    fig.legend(list(legend.values()), list(legend), loc="lower center", ncol=len(legend),
               fontsize=7, frameon=False)
    status = "met" if result.met_budget else "NOT met"
    fig.suptitle(f"Pruning trade-off: accuracy vs speedup per pruning ratio (budget {status})",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path)
    plt.close(fig)
