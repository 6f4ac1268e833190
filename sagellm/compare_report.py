"""The report of a ``sagellm compare`` grid: ``report.md``, ``summaries.csv`` and plots.

``report.md`` (Markdown): the grid (workload, clusters with their estimated capacity,
policies, routers, loads), then per load a table of every cluster / policy / router with
SLO attainment, goodput, p99 TTFT, p99 end-to-end latency, cost per million tokens and
rejections, the best policy / router per cluster at that load, a summary table of the
winners and the plots (``plots/*.png``, :mod:`sagellm.compare_plots`).

Best = highest SLO attainment, then highest goodput, then lowest cost per million tokens,
then the first in table order. Everything is computed from the summary table (one row per
run, :func:`sagellm.compare_store.summary_row`), so a report rebuilt from the run files
equals the one written after running them.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

__all__ = ["REPORT_COLUMNS", "best_runs", "report_tables", "write_report"]

# (header, column, format, scale)
REPORT_COLUMNS: tuple[tuple[str, str, str, float], ...] = (
    ("offered req/s", "offered_rps", ".2f", 1.0),
    ("SLO attainment %", "slo_attainment", ".1f", 100.0),
    ("goodput req/s", "goodput_rps", ".2f", 1.0),
    ("p99 TTFT s", "ttft_p99_s", ".3f", 1.0),
    ("p99 e2e s", "e2e_p99_s", ".2f", 1.0),
    ("USD / Mtok", "cost_per_mtok_usd", ".3f", 1.0),
    ("rejected", "rejected", "d", 1.0),
)
_UNIT_TEXT = {"capacity": "x estimated capacity", "trace": "x the trace's rate"}


def _fmt(v: object, spec: str, scale: float) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if spec == "d":
        return str(int(v))  # type: ignore[call-overload]
    return format(float(v) * scale, spec)  # type: ignore[arg-type]


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    right = ["---:" if k >= len(header) - len(REPORT_COLUMNS) else "---"
             for k in range(len(header))]
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(right) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def best_runs(df: pd.DataFrame) -> pd.DataFrame:
    """The best row per (workload, cluster, load unit, load), in first-seen order."""
    ranked = df.assign(
        _att=df["slo_attainment"].fillna(-1.0), _good=df["goodput_rps"].fillna(-1.0),
        _cost=df["cost_per_mtok_usd"].fillna(math.inf), _pos=range(len(df)))
    ranked = ranked.sort_values(["_att", "_good", "_cost", "_pos"],
                                ascending=[False, False, True, True], kind="stable")
    keys = ["workload", "cluster", "load_unit", "load"]
    best = ranked.drop_duplicates(keys).sort_values("_pos", kind="stable")
    return best.drop(columns=["_att", "_good", "_cost", "_pos"])


def _grid_section(df: pd.DataFrame) -> list[str]:
    lines = ["## Grid", ""]
    for wl, part in df.groupby("workload", sort=False):
        seeds = ", ".join(str(s) for s in dict.fromkeys(part["seed"]))
        reqs = ", ".join(f"{int(n):,}" for n in dict.fromkeys(part["requests"]))
        lines.append(f"- workload: `{wl}`, {reqs} requests, seed {seeds}")
    lines.append("- clusters:")
    for _, row in df.drop_duplicates(["workload", "cluster"]).iterrows():
        lines.append(f"  - `{row['cluster']}`: {row['cluster_description']}; estimated "
                     f"capacity {row['capacity_rps']:.2f} req/s for `{row['workload']}`")
    lines.append(f"- policies: {', '.join(f'`{p}`' for p in dict.fromkeys(df['policy']))}")
    lines.append(f"- routers: {', '.join(f'`{r}`' for r in dict.fromkeys(df['router']))}")
    for unit, part in df.groupby("load_unit", sort=False):
        loads = ", ".join(f"{x:g}" for x in sorted(part["load"].unique()))
        lines.append(f"- loads ({_UNIT_TEXT.get(unit, unit)}): {loads}")
    lines += [f"- runs: {len(df)}", "",
              "Load 1.0 x estimated capacity is the request rate the cluster sustains by the "
              "planner's steady-state model (`sagellm.capacity`); the trace's arrival times "
              "are rescaled to it. SLO attainment counts rejected requests as misses; "
              "goodput is requests/s that met their SLO.", ""]
    return lines


def _load_sections(df: pd.DataFrame, best: pd.DataFrame) -> list[str]:
    multi_wl = df["workload"].nunique() > 1
    lines: list[str] = []
    for (unit, load), part in df.groupby(["load_unit", "load"], sort=True):
        lines += [f"## Load {load:g} {_UNIT_TEXT.get(unit, unit)}", ""]
        header = [*(["workload"] if multi_wl else []), "cluster", "policy", "router",
                  *(h for h, *_ in REPORT_COLUMNS)]
        rows = []
        for _, r in part.iterrows():
            rows.append([*([str(r["workload"])] if multi_wl else []), str(r["cluster"]),
                         str(r["policy"]), str(r["router"]),
                         *(_fmt(r[c], f, s) for _, c, f, s in REPORT_COLUMNS)])
        lines += _table(header, rows)
        lines.append("")
        b = best[(best["load_unit"] == unit) & (best["load"] == load)]
        for _, r in b.iterrows():
            where = f"`{r['workload']}` on " if multi_wl else ""
            lines.append(f"Best on {where}`{r['cluster']}`: **{r['policy']} / {r['router']}** "
                         f"(SLO attainment {_fmt(r['slo_attainment'], '.1f', 100.0)} %, "
                         f"goodput {_fmt(r['goodput_rps'], '.2f', 1.0)} req/s)")
            lines.append("")
    return lines


def _best_section(best: pd.DataFrame) -> list[str]:
    multi_wl = best["workload"].nunique() > 1
    header = ["load", *(["workload"] if multi_wl else []), "cluster", "best policy / router",
              "SLO attainment %", "goodput req/s", "p99 TTFT s", "USD / Mtok"]
    rows = []
    for _, r in best.sort_values(["load_unit", "load"], kind="stable").iterrows():
        rows.append([f"{r['load']:g} {_UNIT_TEXT.get(r['load_unit'], r['load_unit'])}",
                     *([str(r["workload"])] if multi_wl else []), str(r["cluster"]),
                     f"{r['policy']} / {r['router']}",
                     _fmt(r["slo_attainment"], ".1f", 100.0), _fmt(r["goodput_rps"], ".2f", 1),
                     _fmt(r["ttft_p99_s"], ".3f", 1), _fmt(r["cost_per_mtok_usd"], ".3f", 1)])
    out = ["## Best policy / router per load", ""]
    n = len(header)
    out += ["| " + " | ".join(header) + " |", "|" + "|".join(
        ["---"] * (n - 4) + ["---:"] * 4) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return [*out, ""]


def report_tables(df: pd.DataFrame) -> str:
    """The report's per-load tables and the winners, as Markdown text (for a terminal)."""
    best = best_runs(df.reset_index(drop=True))
    return "\n".join(_load_sections(df, best) + _best_section(best))


def write_report(df: pd.DataFrame, out_dir: str | Path, *, title: str = "sagellm compare",
                 plots: bool = True) -> Path:
    """Write ``report.md``, ``summaries.csv`` and ``plots/*.png`` under ``out_dir`` from a
    summary table (:func:`sagellm.compare.run_grid` / :func:`~sagellm.compare.load_summaries`
    return one); returns the report's path."""
    if df.empty:
        raise ValueError("write_report: the summary table has no runs")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    df = df.reset_index(drop=True)
    df.to_csv(out / "summaries.csv", index=False)
    best = best_runs(df)
    lines = [f"# {title}", ""]
    lines += _grid_section(df)
    lines += _load_sections(df, best)
    lines += _best_section(best)
    if plots:
        from sagellm.compare_plots import plot_all  # matplotlib only when plotting

        files = plot_all(df, out / "plots")
        lines += ["## Plots", ""]
        lines += [f"![{p.stem}](plots/{p.name})" for p in files]
        lines.append("")
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
