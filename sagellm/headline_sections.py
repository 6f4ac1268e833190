"""Text of the headline report: formatting helpers and the per-study result sections
(knee, goal, sensitivity, seeds, miss reasons, variants, check rerun) of
:mod:`sagellm.headline_report`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pandas as pd

from sagellm.headline import StudyResult, Threshold, ratio_of
from workloads import DEFAULT_CLASSES

__all__ = ["CLASS_OF", "backlog_warning", "change", "class_cols", "engine_text", "load_text",
           "md_table", "num", "pct", "ratio_text", "study_sections", "tgt", "threshold_text"]

CLASS_OF = {c.priority: c.name for c in DEFAULT_CLASSES}


def pct(x: object, digits: int = 1) -> str:
    """A fraction as a percentage; more digits where rounding would show a miss as 100 %."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    v = float(x) * 100
    while v < 100 and float(f"{v:.{digits}f}") >= 100 and digits < 4:
        digits += 1
    return f"{v:.{digits}f} %"


def num(x: object, spec: str = ".2f") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(
        float(x), spec)


def change(base: float, new: float) -> str:
    if not base or math.isnan(base) or math.isnan(new):
        return "-"
    return f"{(new - base) / base * 100:+.0f} %"


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return out + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]


def tgt(t: float) -> str:
    """A target as a percentage, with a decimal only when it has one."""
    x = round(t * 100, 1)
    return f"{x:g} %"


def load_text(r: StudyResult, x: float | None) -> str:
    if x is None:
        return "none"
    return f"{x:.3g} x cap = {x * r.capacity_rps:.2f} req/s"


def threshold_text(r: StudyResult, t: Threshold | None) -> str:
    if t is None:
        return "-"
    if t.passed is None:
        return f"never (below {tgt(t.target)} from {t.points[0][0]:g} x cap)"
    if t.failed is None:
        return f">= {load_text(r, t.passed)} (highest tried)"
    return load_text(r, t.passed)


def ratio_text(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def backlog_warning(r: StudyResult, pair: str, load: float | None) -> str:
    """A sentence when the run at ``load`` ended with more than 1 % of the requests still
    waiting for a first token at the last arrival (an unsustained load), else ''."""
    row = r.row(pair, load)
    if row is None or row["waiting_at_end"] <= 0.01 * r.requests:
        return ""
    return (f" Caution: at {load:g} x cap {int(row['waiting_at_end'])} requests "
            f"({row['waiting_at_end'] / r.requests:.1%}) still waited for a first token when "
            "the last request arrived: that load is not sustained; its attainment owes "
            "something to the trace ending.")


def engine_text(x: Any) -> str:
    e = getattr(x, "engine", None)
    if e is None:
        return "bare control-plane view"
    on = {True: "on", False: "off"}
    return (f"max_num_seqs {e.max_num_seqs}, max_num_batched_tokens "
            f"{e.max_num_batched_tokens}, chunked prefill {on[e.enable_chunked_prefill]}, "
            f"prefix caching {on[e.enable_prefix_caching]}, KV block "
            f"{e.block_size} tokens, prefix hashes read as "
            f"{e.hash_block_size or e.block_size}-token blocks, engine scheduling "
            f"{e.scheduling_policy}, KV capacity {e.kv_capacity_tokens:,} tokens")


# -- per study results -------------------------------------------------------------------------
def class_cols(row: Any) -> list[str]:
    return [pct(row.get(f"attainment_p{p}"), 1) for p in sorted(CLASS_OF)]


def _knee_section(r: StudyResult) -> list[str]:
    s = r.study
    pts = ", ".join(f"{x:g}: {pct(a)}" for x, a in r.knee.points)
    lines = [f"### {s.title}", "",
             f"Knee search ({s.baseline.label}, target {tgt(r.knee_target)}"
             + (f", lowered from {tgt(s.knee_target)} because the near-idle ceiling is "
                f"{pct(r.ceiling)}" if r.knee_target != s.knee_target else "")
             + f"): load x cap: attainment = {pts}. Knee = **{r.knee_load:g} x cap** "
             f"({r.knee_load * r.capacity_rps:.2f} req/s).", "",
             f"Every pair at the knee, best first ({len(r.at_knee)} pairs):", ""]
    header = ["#", "pair", "SLO attainment", *[f"{CLASS_OF[p]}" for p in sorted(CLASS_OF)],
              "goodput req/s", "p99 TTFT s", "p99 e2e s", "rejected", "waiting at end",
              "prefix hit"]
    rows = []
    for k, (_, row) in enumerate(r.at_knee.iterrows(), 1):
        rows.append([str(k), row["pair"], pct(row["slo_attainment"]), *class_cols(row),
                     num(row["goodput_rps"]), num(row["ttft_p99_s"], ".3f"),
                     num(row["e2e_p99_s"], ".1f"), str(int(row["rejected"])),
                     str(int(row["waiting_at_end"])), pct(row["prefix_cache_hit_ratio"])])
    lines += md_table(header, rows)
    same = _identical_groups(r.at_knee)
    if same:
        lines += ["", "Pairs with identical figures at the knee (same decisions in effect): "
                  + "; ".join(" = ".join(g) for g in same) + "."]
    return [*lines, ""]


def _identical_groups(df: pd.DataFrame) -> list[list[str]]:
    cols = ["slo_attainment", "goodput_rps", "ttft_p99_s", "e2e_p99_s", "rejected"]
    keyed: dict[tuple, list[str]] = {}
    for _, row in df.iterrows():
        keyed.setdefault(tuple(round(float(row[c]), 9) for c in cols), []).append(row["pair"])
    return [g for g in keyed.values() if len(g) > 1]


def _goal_section(r: StudyResult, secondary: bool) -> list[str]:
    table = r.secondary if secondary else r.goal
    target = r.secondary_target if secondary else r.study.goal_target
    if not table:
        return []
    title = (f"Secondary target {tgt(target)} (the baseline's near-idle ceiling "
             f"{pct(r.ceiling)} minus {r.study.secondary_drop * 100:.0f} points, rounded "
             f"down)" if secondary else f"Goodput at {tgt(target)} SLO attainment")
    header = ["pair", f"highest load >= {tgt(target)}", "goodput there req/s",
              "attainment there", "first load below", "ratio to baseline",
              "waiting at end / drain s there", "bracket points"]
    rows = []
    for pair in r.finalists:
        t = table[pair]
        row = r.row(pair, t.passed)
        ratio = r.ratio(pair, secondary)
        rows.append([pair, threshold_text(r, t),
                     num(row["goodput_rps"]) if row else "-",
                     pct(row["slo_attainment"], 2) if row else "-",
                     "-" if t.failed is None else f"{t.failed:g}",
                     "-" if ratio is None else f"{ratio:.2f}x",
                     f"{int(row['waiting_at_end'])} / {row['drain_s']:.0f}" if row else "-",
                     ", ".join(f"{x:g}:{a * 100:.1f}" for x, a in t.points)])
    gate = r.study.gate_alone()
    alone = f", {gate.label} (the TPOT gate alone)" if gate is not None else ""
    return [f"{title}, {r.study.title} (finalists: the baseline, the best pair with its "
            f"policy{alone}, then the best distinct pairs at the knee):", "",
            *md_table(header, rows), ""]


def _sensitivity_section(r: StudyResult) -> list[str]:
    if not r.sensitivity:
        return []
    base = r.study.baseline.label
    targets = sorted({r.study.goal_target, *r.sensitivity})
    tables = {t: (r.goal if t == r.study.goal_target else r.sensitivity[t]) for t in targets}
    header = ["pair", *[f"highest load >= {tgt(t)} (ratio)" for t in targets]]
    rows = []
    for pair in r.finalists:
        cells = []
        for t in targets:
            th = tables[t][pair]
            x = ratio_of(tables[t], base, pair)
            cells.append(("never" if th.passed is None else f"{th.passed:.3g}")
                         + ("" if th.failed is not None or th.passed is None else "+")
                         + f" ({ratio_text(x)})")
        rows.append([pair, *cells])
    return [f"How the ratio depends on the target, {r.study.title} (load x cap; '+': no "
            "failure up to the highest load tried):", "", *md_table(header, rows), ""]


def _seed_section(r: StudyResult) -> list[str]:
    if not r.seed_checks:
        return []
    base = r.study.baseline.label
    header = ["workload seed", "target", "pair", "highest load", "ratio to baseline"]
    rows = []
    target, table = r.main
    for seed, t, got in [(r.study.workload.seed, target, table), *r.seed_checks]:
        for pair, th in got.items():
            if pair not in (base, r.best, r.best_ratio):
                continue
            rows.append([str(seed), tgt(t), pair, threshold_text(r, th),
                         ratio_text(ratio_of(got, base, pair))])
    return [f"Other workload seeds (class draws and router randomness), {r.study.title}:",
            "", *md_table(header, rows), ""]


def _miss_section(r: StudyResult) -> list[str]:
    base = r.study.baseline.label
    near = r.study.grid[0]
    cases = [(base, near, "near-idle"), (base, r.knee_load, "knee"),
             (r.best, r.knee_load, "knee")]
    header = ["pair", "load", "class", "attainment", "missed TTFT", "missed TPOT",
              "missed e2e", "rejected / failed", "p99 TTFT s"]
    rows = []
    for pair, load, what in cases:
        row = r.row(pair, load)
        if row is None:
            continue
        for p, name in sorted(CLASS_OF.items()):
            if f"attainment_p{p}" not in row:
                continue
            rows.append([pair, f"{load:g} ({what})", name, pct(row[f"attainment_p{p}"]),
                         pct(row.get(f"miss_ttft_p{p}")), pct(row.get(f"miss_tpot_p{p}")),
                         pct(row.get(f"miss_e2e_p{p}")), pct(row.get(f"miss_lost_p{p}")),
                         num(row.get(f"ttft_p99_s_p{p}"))])
    if not rows:
        return []
    return [f"Why requests miss, {r.study.title} (shares of each class; a request can miss "
            "several bounds):", "", *md_table(header, rows), ""]


def _variant_section(r: StudyResult) -> list[str]:
    v = r.variant_rows
    if v is None or v.empty:
        return []
    header = ["variant", "pair", "offered req/s", "SLO attainment",
              *[CLASS_OF[p] for p in sorted(CLASS_OF)], "goodput req/s", "p99 TTFT s",
              "rejected", "waiting at end"]
    rows = []
    study = r.at_knee.set_index("pair")
    for pair in dict.fromkeys(v["pair"]):
        if pair in study.index:
            row = study.loc[pair]
            rows.append(["(the study's cluster)", *_variant_cells(pair, row)])
    for _, row in v.iterrows():
        rows.append([row["variant"], *_variant_cells(row["pair"], row)])
    return [f"Deployment variants at the knee's request rate ({r.knee_load:g} x cap = "
            f"{r.knee_load * r.capacity_rps:.2f} req/s), {r.study.title}: not part of the "
            "answer above (the cluster changes); they show where the policies' effect is "
            "limited:", "", *md_table(header, rows), ""]


def _variant_cells(pair: str, row: Any) -> list[str]:
    return [pair, num(row["offered_rps"]), pct(row["slo_attainment"]), *class_cols(row),
            num(row["goodput_rps"]), num(row["ttft_p99_s"], ".3f"), str(int(row["rejected"])),
            str(int(row["waiting_at_end"]))]


def _check_section(r: StudyResult) -> list[str]:
    c = r.check_rows
    if c is None or c.empty:
        return []
    lines = [f"Rerun on cluster `{r.study.check_cluster.name}` "
             f"({engine_text(r.study.check_cluster.instances[0])}) against the study's "
             "cluster, at the same request rates:", ""]
    header = ["pair", "load (study's)", "req/s", "attainment (study / check)",
              "goodput (study / check)",
              "p99 TTFT s (study / check)", "prefix hit (study / check)"]
    rows = []
    for _, row in c.iterrows():
        mine = r.row(row["pair"], row["study_load"]) or {}
        rows.append([row["pair"], f"{row['study_load']:g}", f"{row['offered_rps']:.2f}",
                     f"{pct(mine.get('slo_attainment'), 2)} / {pct(row['slo_attainment'], 2)}",
                     f"{num(mine.get('goodput_rps'))} / {num(row['goodput_rps'])}",
                     f"{num(mine.get('ttft_p99_s'), '.3f')} / {num(row['ttft_p99_s'], '.3f')}",
                     f"{pct(mine.get('prefix_cache_hit_ratio'))} / "
                     f"{pct(row['prefix_cache_hit_ratio'])}"])
    return [*lines, *md_table(header, rows), ""]


def study_sections(r: StudyResult) -> list[str]:
    """Every result section of one study, in report order."""
    return [*_knee_section(r), *_goal_section(r, secondary=False),
            *_goal_section(r, secondary=True), *_sensitivity_section(r), *_seed_section(r),
            *_miss_section(r), *_variant_section(r), *_check_section(r)]
