"""Plots of a ``sagellm compare`` summary table (PNG files, matplotlib's Agg backend).

Every figure has one panel per cluster and one line (or bar) per policy / router pair:
SLO attainment, goodput, p99 TTFT and p99 end-to-end latency and cost per million tokens
against load, and p99 queueing delay per priority level at each load.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from sagellm.plots import plt  # pyplot with the Agg backend selected (files only)

__all__ = ["PLOTS", "plot_all"]

# file stem -> (title, [(column, y label, scale)])
PLOTS: dict[str, tuple[str, list[tuple[str, str, float]]]] = {
    "slo_attainment": ("SLO attainment vs load", [("slo_attainment", "SLO attainment (%)",
                                                    100.0)]),
    "goodput": ("Goodput vs load", [("goodput_rps", "goodput (req/s meeting SLO)", 1.0)]),
    "latency_p99": ("p99 latency vs load", [("ttft_p99_s", "p99 TTFT (s)", 1.0),
                                            ("e2e_p99_s", "p99 end-to-end (s)", 1.0)]),
    "cost_per_mtok": ("Cost per million tokens vs load",
                      [("cost_per_mtok_usd", "USD per million tokens", 1.0)]),
}
_UNIT_LABEL = {"capacity": "load (fraction of estimated capacity)",
               "trace": "rate scale (x the trace's rate)"}


def _labels(df: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(df["policy"] + " / " + df["router"]))


def _lines(path: Path, df: pd.DataFrame, title: str, rows: list[tuple[str, str, float]],
           unit: str) -> Path:
    clusters = list(dict.fromkeys(df["cluster"]))
    labels = _labels(df)
    fig, axes = plt.subplots(len(rows), len(clusters), squeeze=False,
                             figsize=(5.2 * len(clusters) + 1.8, 3.6 * len(rows)),
                             constrained_layout=True)
    for c, cluster in enumerate(clusters):
        part = df[df["cluster"] == cluster]
        for r, (col, ylabel, scale) in enumerate(rows):
            ax = axes[r][c]
            for label in labels:
                pol, rt = label.split(" / ", 1)
                line = part[(part["policy"] == pol) & (part["router"] == rt)].sort_values("load")
                if len(line):
                    ax.plot(line["load"], line[col].astype(float) * scale, marker="o",
                            label=label)
            ax.set_xlabel(_UNIT_LABEL.get(unit, "load"))
            ax.set_ylabel(ylabel)
            ax.set_title(cluster if len(rows) == 1 else f"{cluster}: {ylabel}")
            ax.grid(True, alpha=0.3)
    axes[0][-1].legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize="small")
    fig.suptitle(title)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _queue_delay(path: Path, df: pd.DataFrame, unit: str) -> Path:
    prios = sorted(int(c.rsplit("_p", 1)[1]) for c in df.columns
                   if c.startswith("queue_delay_p99_s_p"))
    clusters = list(dict.fromkeys(df["cluster"]))
    loads = sorted(df["load"].unique())
    labels = _labels(df)
    fig, axes = plt.subplots(len(clusters), len(loads), squeeze=False,
                             figsize=(4.2 * len(loads) + 1.8, 3.4 * len(clusters)),
                             constrained_layout=True)
    width = 0.8 / max(1, len(labels))
    x = np.arange(len(prios))
    for r, cluster in enumerate(clusters):
        for c, load in enumerate(loads):
            ax = axes[r][c]
            part = df[(df["cluster"] == cluster) & (df["load"] == load)]
            top = 0.0
            for k, label in enumerate(labels):
                pol, rt = label.split(" / ", 1)
                row = part[(part["policy"] == pol) & (part["router"] == rt)]
                if not len(row):
                    continue
                y = [float(row[f"queue_delay_p99_s_p{p}"].iloc[0]) for p in prios]
                y = [0.0 if math.isnan(v) else v for v in y]
                top = max(top, *y)
                ax.bar(x + (k - (len(labels) - 1) / 2) * width, y, width, label=label)
            if top == 0.0:
                ax.set_ylim(0.0, 1.0)
                ax.text(0.5, 0.5, "no queueing", ha="center", va="center",
                        transform=ax.transAxes, color="gray")
            else:
                ax.set_ylim(bottom=0.0)
            ax.set_xticks(x, [f"p{p}" for p in prios])
            ax.set_xlabel("priority (0 = most important)")
            ax.set_ylabel("p99 queueing delay (s)")
            unit_text = "x capacity" if unit == "capacity" else "x trace rate"
            ax.set_title(f"{cluster}, load {load:g} {unit_text}")
            ax.grid(True, axis="y", alpha=0.3)
    axes[0][-1].legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize="small")
    fig.suptitle("Queueing delay in the control plane by priority")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_all(df: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Write every plot of ``df`` (a summary table) under ``out_dir``; returns the files.
    With several load units in one table, each gets its own set (``<stem>_<unit>.png``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    units = list(dict.fromkeys(df["load_unit"]))
    written = []
    for unit in units:
        part = df[df["load_unit"] == unit]
        suffix = f"_{unit}" if len(units) > 1 else ""
        for stem, (title, rows) in PLOTS.items():
            written.append(_lines(out_dir / f"{stem}{suffix}.png", part, title, rows, unit))
        written.append(_queue_delay(out_dir / f"queue_delay_by_priority{suffix}.png", part,
                                    unit))
    return written
