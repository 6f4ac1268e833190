"""Latency distributions of per-request records: per-request latencies and CDF figures.

Input: a records table with the columns of :class:`control_plane.records.RequestRecord`
(``arrival_s``, ``dispatch_s``, ``first_token_s``, ``finish_s``, ``output_tokens``,
``status``, ...) plus any labels (``router``, ``policy``, ``load``, ``source``, ...), as
:func:`sagellm.compare.load_records` returns for simulated runs and the replay client
writes for live ones. The latencies are those of the summaries
(:mod:`control_plane.summary_core`), for requests that completed (``status == "ok"``):

- ``ttft_s`` = first token - arrival, ``e2e_s`` = finish - arrival,
  ``queue_s`` = first dispatch - arrival (time in the control plane's queue);
- ``tpot_s`` = (finish - first token) / (output tokens - 1), for 2 or more output tokens.

:func:`cdf_figure` draws empirical CDFs: one column of panels per latency, one row per
value of ``panels`` (e.g. per load, or per load and router), one line per value of ``by``
(e.g. router, policy, or sim vs live). With ``logx`` a panel whose values span more than a
factor of 10 gets a log axis (a narrower one stays linear: it reads better). It returns a
matplotlib Figure made without pyplot (nothing global is touched); a notebook shows it as
the cell's value.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

__all__ = ["LATENCIES", "cdf_figure", "latencies"]

# column -> axis label
LATENCIES: dict[str, str] = {
    "ttft_s": "TTFT (s)",
    "tpot_s": "TPOT (s)",
    "e2e_s": "end-to-end latency (s)",
    "queue_s": "queueing delay (s)",
}
_TIMES = ("arrival_s", "dispatch_s", "first_token_s", "finish_s")
_LOG_SPAN = 10.0  # a log axis only for values spanning more than this factor


def latencies(records: pd.DataFrame) -> pd.DataFrame:
    """The completed requests of ``records`` with ``ttft_s``, ``tpot_s``, ``e2e_s`` and
    ``queue_s`` added (``tpot_s`` NaN with fewer than 2 output tokens)."""
    missing = [c for c in (*_TIMES, "output_tokens", "status") if c not in records.columns]
    if missing:
        raise ValueError(f"records: missing column(s) {missing}")
    ok = records[records["status"] == "ok"]
    t = {c: ok[c].to_numpy(dtype=float, na_value=np.nan) for c in _TIMES}
    out = ok["output_tokens"].to_numpy(dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        tpot = np.where(out > 1, (t["finish_s"] - t["first_token_s"]) / np.maximum(out - 1, 1),
                        np.nan)
    return ok.assign(ttft_s=t["first_token_s"] - t["arrival_s"], tpot_s=tpot,
                     e2e_s=t["finish_s"] - t["arrival_s"],
                     queue_s=t["dispatch_s"] - t["arrival_s"])


def _columns(value: str | Sequence[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _text(v: object) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _label(columns: list[str], key: object, names: bool = True) -> str:
    """``load 0.8, router x`` (``names``) or ``0.8, x`` for a group key."""
    values = key if isinstance(key, tuple) else (key,)
    return ", ".join(f"{c} {_text(v)}" if names else _text(v)
                     for c, v in zip(columns, values, strict=True))


def cdf_figure(records: pd.DataFrame, *, by: str | Sequence[str],
               panels: str | Sequence[str] | None = None,
               metrics: Sequence[str] = ("ttft_s", "tpot_s", "e2e_s"), logx: bool = True,
               title: str | None = None, width_in: float = 4.2,
               height_in: float = 3.2) -> Figure:
    """Empirical CDFs of ``metrics`` (see the module doc); ``records`` may already hold the
    latency columns (then it is used as it is), else :func:`latencies` adds them."""
    unknown = [m for m in metrics if m not in LATENCIES]
    if unknown or not metrics:
        raise ValueError(f"metrics {list(metrics)}: each one of {list(LATENCIES)}")
    df = records if all(m in records.columns for m in metrics) else latencies(records)
    by_cols, panel_cols = _columns(by), _columns(panels)
    if not by_cols:
        raise ValueError("by: name at least one column")
    for c in by_cols + panel_cols:
        if c not in df.columns:
            raise ValueError(f"records: no column {c!r}")
    rows = list(df.groupby(panel_cols, sort=True)) if panel_cols else [((), df)]
    fig = Figure(figsize=(width_in * len(metrics) + 1.6, height_in * max(1, len(rows))),
                 constrained_layout=True)
    axes = fig.subplots(max(1, len(rows)), len(metrics), squeeze=False)
    for r, (key, part) in enumerate(rows):
        for c, metric in enumerate(metrics):
            ax = axes[r][c]
            lines = []
            for line_key, line in part.groupby(by_cols, sort=False):
                x = np.sort(line[metric].to_numpy(dtype=float, na_value=np.nan))
                lines.append((line_key, x[~np.isnan(x)]))
            values = np.concatenate([x for _, x in lines]) if lines else np.zeros(0)
            positive = values[values > 0]
            log = logx and len(positive) > 0 and positive.max() > _LOG_SPAN * positive.min()
            for line_key, x in lines:
                if log:
                    x = x[x > 0]
                if len(x):
                    ax.step(x, np.arange(1, len(x) + 1) / len(x), where="post",
                            label=_label(by_cols, line_key, names=False))
            if log:
                ax.set_xscale("log")
                ax.xaxis.set_minor_formatter(NullFormatter())  # no crowded minor labels
            ax.set_xlabel(LATENCIES[metric])
            ax.set_ylabel("fraction of requests")
            ax.set_ylim(0.0, 1.0)
            ax.grid(True, alpha=0.3)
            if panel_cols:
                ax.set_title(_label(panel_cols, key), fontsize="medium")
        axes[r][-1].legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize="small",
                           title=", ".join(by_cols), title_fontsize="small")
    if title:
        fig.suptitle(title)
    return fig
