"""Plots of the headline report (PNG, matplotlib's Agg backend): the finalists' curves
against load and every pair's attainment at the knee."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from sagellm.headline import StudyResult, short_name
from sagellm.headline_sections import tgt

__all__ = ["write_plots"]

def _curves(r: StudyResult) -> dict[str, pd.DataFrame]:
    out = {}
    rows = r.main_rows
    for pair in r.finalists:
        part = rows[rows["pair"] == pair].sort_values("load")
        out[pair] = part
    return out


def _zoom(r: StudyResult) -> tuple[float, float]:
    """Attainment range (%) around the targets that matter for the study."""
    if r.secondary_target is None:
        return r.study.goal_target * 100 - 4, 100.3
    return r.knee_target * 100 - 3, r.ceiling * 100 + 6


def _line_plot(path: Path, results: Sequence[StudyResult], panels: list[tuple[str, str, float]],
               title: str) -> Path:
    """One row per panel ``(column, y label, scale)``; a y label ending in ``(zoom)`` shows
    the attainment range of :func:`_zoom`."""
    from sagellm.plots import plt

    fig, axes = plt.subplots(len(panels), len(results), squeeze=False,
                             figsize=(6.0 * len(results) + 1.5, 3.8 * len(panels)),
                             constrained_layout=True)
    for c, r in enumerate(results):
        base = r.study.baseline.label
        for k, (col, ylabel, scale) in enumerate(panels):
            ax = axes[k][c]
            for pair, part in _curves(r).items():
                style = {"color": "black", "linewidth": 2.2} if pair == base else {}
                ax.plot(part["load"], part[col].astype(float) * scale, marker="o",
                        markersize=3, label=pair, **style)
            if col == "slo_attainment":
                ax.axhline(r.study.goal_target * 100, color="tab:green", ls="--", lw=1,
                           label=f"{tgt(r.study.goal_target)} target")
                ax.axhline(r.knee_target * 100, color="tab:red", ls="--", lw=1,
                           label=f"{tgt(r.knee_target)} (knee target)")
                if r.secondary_target is not None:
                    ax.axhline(r.secondary_target * 100, color="tab:purple", ls=":", lw=1,
                               label=f"{tgt(r.secondary_target)} (secondary)")
            else:
                ax.set_yscale("log" if col.endswith("_s") else "linear")
            if ylabel.endswith("(zoom)"):
                ax.set_ylim(*_zoom(r))
            ax.axvline(r.knee_load, color="gray", ls=":", lw=1)
            ax.set_xlabel(f"load (x estimated capacity, 1.0 = {r.capacity_rps:.1f} req/s)")
            ax.set_ylabel(ylabel)
            ax.set_title(f"{r.study.title}: {ylabel}" if len(panels) > 1 else r.study.title)
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize="x-small", loc="best")
    fig.suptitle(title)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _heatmap(path: Path, results: Sequence[StudyResult]) -> Path:
    from sagellm.plots import plt

    rows = max(len(r.study.policy_labels()) for r in results)
    fig, axes = plt.subplots(1, len(results), squeeze=False,
                             figsize=(7.5 * len(results), max(4.2, 1.6 + 0.32 * rows)),
                             constrained_layout=True)
    for c, r in enumerate(results):
        ax = axes[0][c]
        pols = r.study.policy_labels()
        routs = [short_name(x) for x in r.study.routers]
        grid = np.full((len(pols), len(routs)), np.nan)
        for _, row in r.at_knee.iterrows():
            grid[pols.index(row["policy_name"]), routs.index(row["router_name"])] = \
                row["slo_attainment"] * 100
        im = ax.imshow(grid, cmap="RdYlGn", vmin=max(0.0, np.nanmin(grid) - 1), vmax=100,
                       aspect="auto")
        for i in range(len(pols)):
            for j in range(len(routs)):
                ax.text(j, i, f"{grid[i, j]:.1f}", ha="center", va="center", fontsize=7)
        ax.set_xticks(range(len(routs)), routs, rotation=35, ha="right", fontsize=8)
        ax.set_yticks(range(len(pols)), pols)
        ax.set_title(f"{r.study.title}: SLO attainment % at the knee ({r.knee_load:g} x cap)")
        fig.colorbar(im, ax=ax, shrink=0.8)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_plots(results: Sequence[StudyResult], out: Path, prefix: str) -> list[Path]:
    """``<prefix>_attainment.png``, ``_goodput.png``, ``_latency_p99.png`` and
    ``_pairs_at_knee.png`` under ``out``."""
    return [
        _line_plot(out / f"{prefix}_attainment.png", results,
                   [("slo_attainment", "SLO attainment (%)", 100.0),
                    ("slo_attainment", "SLO attainment (%) (zoom)", 100.0)],
                   "SLO attainment vs load (finalist pairs; baseline in black)"),
        _line_plot(out / f"{prefix}_goodput.png", results,
                   [("goodput_rps", "goodput (req/s meeting SLO)", 1.0)],
                   "Goodput vs load"),
        _line_plot(out / f"{prefix}_latency_p99.png", results,
                   [("ttft_p99_s", "p99 TTFT (s)", 1.0),
                    ("e2e_p99_s", "p99 end-to-end (s)", 1.0)],
                   "p99 latency vs load"),
        _heatmap(out / f"{prefix}_pairs_at_knee.png", results),
    ]
