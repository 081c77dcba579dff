"""Plots: SLO attainment vs mean serving accuracy per trace (the paper's Fig. 9), and SlackFit-LA's dynamics."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["plot_tradeoff", "plot"]


def plot_tradeoff(traces: list[dict], path: Path) -> Path:
    """SLO attainment vs mean serving accuracy, one panel per trace, one point per system (the paper's Fig. 9),
    with the spread between runs as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(traces), figsize=(5 * len(traces), 4.2), squeeze=False)
    for ax, trace in zip(axes[0], traces):
        for row in trace["rows"]:
            label = row["system"]
            style = dict(marker="*", s=220, c="tab:red", zorder=5) if label == "SlackFit" else dict(
                marker="P", s=120, c="tab:brown", zorder=4) if label == "SlackFit-LA" else (
                dict(marker="o", s=50, c="tab:gray") if label.startswith("Clipper+") else dict(
                marker="s", s=60, c={"MaxAcc": "tab:blue", "MaxBatch": "tab:orange"}.get(label, "tab:green")))
            x, y = row["mean_serving_accuracy"] * 100, row["slo_attainment"]
            ax.scatter(x, y, label=label, **style)
            if row.get("attainment_spread") or row.get("accuracy_spread"):
                ax.errorbar(x, y, xerr=50 * row.get("accuracy_spread", 0), yerr=row.get("attainment_spread", 0) / 2,
                            fmt="none", ecolor=style["c"], alpha=0.6, zorder=3)
        ax.set_title(trace["name"], fontsize=9)
        ax.set_xlabel("mean serving accuracy (%)")
        ax.set_ylabel("SLO attainment")
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 5), fontsize=8)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot(results: dict, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = [plot_tradeoff(results["traces"], out / "attainment_vs_accuracy.png")]
    dyn = results.get("dynamics")
    if dyn:
        fig, axes = plt.subplots(3, 1, figsize=(9, 7), sharex=True)
        axes[0].plot(dyn["t_s"], dyn["arrival_rate"], c="tab:blue")
        axes[0].set_ylabel("arrivals / s")
        axes[1].plot(dyn["t_s"], np.asarray(dyn["accuracy"]) * 100, c="tab:green")
        axes[1].set_ylabel("served accuracy (%)")
        axes[2].plot(dyn["batch_t_s"], dyn["batch_size"], c="tab:purple")
        axes[2].set_ylabel("mean batch size")
        axes[2].set_xlabel("time (s)")
        axes[0].set_title(f"SlackFit-LA dynamics on {dyn['trace']}")
        fig.tight_layout()
        path = out / "dynamics.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths
