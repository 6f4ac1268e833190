"""Plots (matplotlib, Agg backend: files only, no screen)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

__all__ = ["plot_workload"]


def plot_workload(path: str | Path, name: str, prompt: np.ndarray, output: np.ndarray,
                  arrival_s: np.ndarray | None = None, bin_s: float = 60.0) -> Path:
    """Arrivals over time (requests/s per ``bin_s`` bin) and length histograms, as a PNG."""
    path = Path(path)
    panels = 3 if arrival_s is not None and len(arrival_s) else 2
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 3.8), constrained_layout=True)
    axes = list(np.atleast_1d(axes))
    if panels == 3:
        ax = axes.pop(0)
        t = arrival_s - arrival_s[0]
        bins = np.floor(t / bin_s).astype(np.int64)
        counts = np.bincount(bins)
        ax.plot(np.arange(len(counts)) * bin_s / 60.0, counts / bin_s, drawstyle="steps-post")
        ax.set_xlabel("time (min)")
        ax.set_ylabel(f"requests/s ({bin_s:g} s bins)")
        ax.set_title(f"{name}: arrivals")
    for ax, values, label in ((axes[0], prompt, "prompt"), (axes[1], output, "output")):
        v = np.asarray(values)
        edges = np.logspace(0, np.log10(max(2, int(v.max()) + 1)), 50) if len(v) else 10
        ax.hist(v, bins=edges, color="tab:blue" if label == "prompt" else "tab:orange")
        ax.set_xscale("log")
        ax.set_xlabel(f"{label} tokens")
        ax.set_ylabel("requests")
        if len(v):
            ax.set_title(f"{label}: p50 {np.percentile(v, 50):.0f}, "
                         f"p99 {np.percentile(v, 99):.0f}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
