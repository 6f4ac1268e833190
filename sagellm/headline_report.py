"""The headline report: Markdown, a summaries CSV and PNG plots of :class:`StudyResult` s.

:func:`write_headline` writes ``<prefix>.md``, ``<prefix>_summaries.csv`` (every run's
summary row, all studies) and ``<prefix>_attainment.png``, ``<prefix>_goodput.png``,
``<prefix>_latency_p99.png`` (the finalists' curves against load, one panel per study) and
``<prefix>_pairs_at_knee.png`` (attainment of every pair at the knee) into one folder.
Everything in the text is computed from the results; ``Study.notes`` add the author's.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from sagellm.compare_grid import ClusterChoice, spec_name
from sagellm.headline import Study, StudyResult, ratio_of, short_name
from sagellm.headline_plots import write_plots
from sagellm.headline_sections import (
    CLASS_OF,
    backlog_warning,
    change,
    engine_text,
    load_text,
    md_table,
    num,
    pct,
    ratio_text,
    study_sections,
    tgt,
    threshold_text,
)
from workloads import DEFAULT_CLASSES

__all__ = ["write_headline"]


# -- the answers ------------------------------------------------------------------------------
def _answer_rows(results: Sequence[StudyResult]) -> list[list[str]]:
    rows = []
    for r in results:
        base = r.study.baseline.label
        b = r.at_knee[r.at_knee["pair"] == base].iloc[0]
        best = r.at_knee.iloc[0]
        ratio = r.ratio(r.best)
        top = r.best_ratio
        top_text = "-"
        if top is not None and r.ratio(top) is not None:
            top_text = f"{top}: {ratio_text(r.ratio(top))}"
        rows.append([
            r.study.title, load_text(r, r.knee_load) + f" (target {tgt(r.knee_target)})",
            pct(b["slo_attainment"]), f"{r.best}: {pct(best['slo_attainment'])}",
            "yes" if best["slo_attainment"] >= r.study.goal_target else "**no**",
            threshold_text(r, r.goal.get(base)), threshold_text(r, r.goal.get(r.best)),
            ratio_text(ratio),
            "-" if ratio is None else ("yes" if ratio >= 1.5 else "**no**"), top_text,
            f"{num(b['ttft_p99_s'])} -> {num(best['ttft_p99_s'])} s "
            f"({change(b['ttft_p99_s'], best['ttft_p99_s'])})",
            f"{num(b.get('ttft_p99_s_p0'))} -> {num(best.get('ttft_p99_s_p0'))} s "
            f"({change(b.get('ttft_p99_s_p0', math.nan), best.get('ttft_p99_s_p0', math.nan))})",
            f"{num(b['e2e_p99_s'], '.1f')} -> {num(best['e2e_p99_s'], '.1f')} s "
            f"({change(b['e2e_p99_s'], best['e2e_p99_s'])})"])
    return rows


ANSWER_HEADER = ["workload", "knee: load where FIFO/RR < target", "FIFO/RR attainment there",
                 "best pair there", ">= 99 %?", "FIFO/RR highest load >= 99 %",
                 "best pair highest load >= 99 %", "ratio", ">= 1.5x?",
                 "largest ratio among finalists", "p99 TTFT at knee, FIFO/RR -> best",
                 "interactive p99 TTFT at knee", "p99 e2e at knee"]


def _verdicts(results: Sequence[StudyResult]) -> list[str]:
    out = []
    for r in results:
        s = r.study
        base = s.baseline.label
        best = r.at_knee.iloc[0]
        att = float(best["slo_attainment"])
        ratio = r.ratio(r.best)
        line = (f"- **{s.title}**: at the knee ({load_text(r, r.knee_load)}, where {base} falls "
                f"below {tgt(r.knee_target)}) the best pair, **{r.best}**, reaches "
                f"{pct(att)}: the {tgt(s.goal_target)} target is "
                f"{'met' if att >= s.goal_target else '**not** met'}. ")
        if ratio is None:
            line += (f"Goodput at {tgt(s.goal_target)} attainment has no ratio: {base} "
                     f"never reaches {tgt(s.goal_target)} (its near-idle ceiling is "
                     f"{pct(r.ceiling)}). ")
        else:
            line += (f"Its highest load at >= {tgt(s.goal_target)} is {ratio:.2f}x "
                     f"{base}'s: the 1.5x claim {'holds' if ratio >= 1.5 else '**fails**'} "
                     "for it. ")
            line += backlog_warning(r, r.best, r.goal[r.best].passed)
        top = r.best_ratio
        target, table = r.main
        if table is r.secondary:
            x = ratio_of(table, base, r.best)
            line += (f"At the secondary target {tgt(target)} ({base}'s near-idle ceiling "
                     f"minus {s.secondary_drop * 100:g} points, rounded down) {r.best} "
                     f"sustains {ratio_text(x)} {base}'s load.")
            line += backlog_warning(r, r.best, table[r.best].passed)
        if top is not None and top != r.best:
            x = ratio_of(table, base, top)
            line += (f" The largest ratio among the finalists at {tgt(target)} is "
                     f"**{x:.2f}x**, {top}.")
            line += backlog_warning(r, top, table[top].passed)
        policy = short_name(s.baseline.policy)
        router_only = [p for p in r.finalists[1:] if p.split(" / ")[0] == policy]
        if router_only and ratio_of(table, base, router_only[0]) is not None:
            line += (f" The router alone ({router_only[0]}, same policy as the baseline) "
                     f"gives {ratio_of(table, base, router_only[0]):.2f}x.")
        gate = s.gate_alone()
        if gate is not None and ratio_of(table, base, gate.label) is not None:
            line += (f" The TPOT gate alone ({gate.label}, the baseline's policy and router) "
                     f"gives {ratio_of(table, base, gate.label):.2f}x.")
            best_gated = r.best_ratio
            if best_gated and best_gated.split(" / ")[0].endswith("+gate"):
                x = ratio_of(table, gate.label, best_gated)
                if x is not None:
                    line += (f" Against {gate.label} (the gate on both sides) {best_gated} "
                             f"sustains {x:.2f}x.")
        if r.sensitivity:
            parts = []
            for t in sorted({s.goal_target, *r.sensitivity}):
                th = r.goal if t == s.goal_target else r.sensitivity[t]
                got = [(ratio_of(th, base, p), p) for p in r.finalists]
                got = [g for g in got if g[0] is not None]
                if got:
                    x, p = max(got)
                    parts.append(f"{tgt(t)}: {x:.2f}x ({p})")
            line += (" The largest finalist ratio depends on the target: "
                     + "; ".join(parts) + ".")
        out.append(re.sub(r"  +", " ", line))
    return out


# -- setup -------------------------------------------------------------------------------------
def _slo_lines() -> list[str]:
    rows = []
    for c in DEFAULT_CLASSES:
        slo = c.slo
        rows.append([c.name, f"{c.share:.0%}", str(c.priority), c.tenant,
                     num(slo.ttft_s, "g") + " s" if slo and slo.ttft_s else "-",
                     f"{slo.tpot_s * 1000:g} ms" if slo and slo.tpot_s else "-",
                     num(slo.e2e_s, "g") + " s" if slo and slo.e2e_s else "-"])
    return [
        "Request classes (the project default mix, `workloads.DEFAULT_CLASSES`, drawn per "
        "request with the workload seed; neither trace has classes of its own):", "",
        *md_table(["class", "share", "priority", "tenant", "TTFT SLO", "TPOT SLO",
                 "end-to-end SLO"], rows), "",
        "A request meets its SLO when it completes and every bound of its class holds: TTFT "
        "= first token - arrival; TPOT = (finish - first token) / (output tokens - 1) "
        "(0 for one-token outputs); end-to-end = finish - arrival. Rejected and failed "
        "requests are misses. **SLO attainment** = requests meeting their SLO / all "
        "requests; **goodput** = requests meeting their SLO / run duration (first arrival "
        "to last finish). The SLOs were not changed for this report.", ""]


def _cluster_lines(c: ClusterChoice) -> list[str]:
    groups: dict[str, list] = {}
    for x in c.instances:
        spec = getattr(x, "spec", x)
        groups.setdefault(spec.gpu_type, []).append(x)
    lines = [f"- cluster `{c.name}`: {c.describe()} (one TP-1 replica per GPU)"]
    for gpu, xs in groups.items():
        spec = getattr(xs[0], "spec", xs[0])
        lines.append(f"  - {len(xs)} x {gpu}: max in flight per instance "
                     f"{spec.max_inflight}, ${spec.price_per_hour_usd:g}/h, nominal "
                     f"prefill {spec.prefill_tokens_per_s:,.0f} tok/s, decode "
                     f"{spec.decode_s_per_token * 1000:.1f} ms/token at batch 32; "
                     f"{engine_text(xs[0])}")
    ctl = {k: v for k, v in dataclasses.asdict(c.control).items()
           if k in ("max_queue", "sheddable_priorities", "max_attempts")}
    lines.append(f"  - control plane: {ctl}; simulator: {dataclasses.asdict(c.sim)}")
    return lines


def _gate_lines(s: Study) -> list[str]:
    gates = [g for g in s.gates if g is not None]
    if not gates:
        return []
    off = " and without" if None in s.gates else ""
    return [f"- TPOT admission gate (`ControlPlaneConfig.tpot_gate`): every pair runs with "
            f"the gate at {', '.join(f'{g:g}' for g in gates)}{off} (pairs with the gate: "
            "`<policy>+gate`): an instance that runs work takes no new request while its "
            "predicted time per output token with one more request exceeds that fraction of "
            "the tightest TPOT SLO among its requests and the new one's; held requests wait "
            "in the control plane's queue in the policy's order (`control_plane/gate.py`)"]


def _study_setup(r: StudyResult) -> list[str]:
    s = r.study
    w = s.workload
    lines = [f"### {s.title}", "",
             f"- trace `{Path(w.trace).name if w.trace else 'synthetic'}`: first "
             f"{r.requests:,} requests, workload seed {w.seed} (class draws and the routers' "
             f"random generator); own rate {r.trace_rate_rps:.2f} req/s",
             f"- estimated capacity (load 1.0) {r.capacity_rps:.2f} req/s; a load x replays "
             f"the trace with arrival times scaled to x times that rate",
             *_cluster_lines(s.cluster),
             f"- policies: {', '.join(f'`{spec_name(p)}`' for p in s.policies)}",
             f"- routers: {', '.join(f'`{spec_name(p)}`' for p in s.routers)}",
             *_gate_lines(s),
             f"- search: grid {list(s.grid)} x cap, knee {s.knee_rounds} rounds of "
             f"{s.per_round + 1}-section, goal {s.goal_rounds} rounds of bisection, loads in "
             f"[{s.min_load:g}, {s.max_load:g}]; sensitivity targets "
             f"{[tgt(t) for t in sorted(r.sensitivity)] or 'none'}; further seeds "
             f"{list(s.seeds) or 'none'}; {len(r.rows)} runs in the study "
             f"({r.runs} simulated in this invocation, the rest reused from run files)"]
    if r.isolated_miss:
        parts = [f"{CLASS_OF.get(p, p)} {pct(v)}" for p, v in sorted(r.isolated_miss.items())
                 if v > 0]
        if parts:
            lines.append("- requests whose TTFT SLO is shorter than their prefill alone on the "
                         "fastest GPU (chunked as the engine does, the simulator's iteration "
                         "times, no prefix-cache hit): no schedule can save them: "
                         f"{', '.join(parts)}")
    lines += [f"- note: {n}" for n in s.notes]
    return [*lines, ""]


# -- the report --------------------------------------------------------------------------------
def write_headline(results: Sequence[StudyResult], out_dir: str | Path, *,
                   prefix: str = "headline", command: str = "",
                   title: str = "Headline results") -> Path:
    """Write the report, the CSV and the plots (module doc); returns the report's path."""
    if not results:
        raise ValueError("write_headline: no results")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    frames = [r.rows.assign(study=r.study.name) for r in results]
    frames += [r.check_rows.assign(study=r.study.name) for r in results
               if r.check_rows is not None and not r.check_rows.empty]
    frames += [r.variant_rows.assign(study=r.study.name) for r in results
               if r.variant_rows is not None and not r.variant_rows.empty]
    csv = out / f"{prefix}_summaries.csv"
    pd.concat(frames, ignore_index=True).to_csv(csv, index=False)
    plots = write_plots(results, out, prefix)
    header = ANSWER_HEADER
    lines = [f"# {title}", "",
             "Simulated (`sim`, SimPy cluster model calibrated from the perf model); not "
             "measured on GPUs.", ""]
    if command:
        lines += ["Reproduce (one command, resumes from its run files):", "", "```",
                  command, "```", ""]
    lines += ["## Answers", "", *md_table(header, _answer_rows(results)), "",
              *_verdicts(results), "",
              f"![attainment]({plots[0].name})", "", "## Setup", "", *_slo_lines()]
    for r in results:
        lines += _study_setup(r)
    lines += ["## Method", "",
              "Per workload: (1) the knee: fifo / round_robin on the load grid, then rounds "
              "of k-section between the highest load meeting the knee target and the first "
              "failing one; the knee is that first failing load. (2) Every policy x router "
              "pair (with and without the TPOT gate, where the study has gated pairs) at the "
              "knee, ranked by attainment, then goodput, then p99 end-to-end latency. (3) "
              "Finalists: the baseline, the best pair with the baseline's policy (the "
              "router's gain alone), the baseline's policy and router with the gate (the "
              "gate's gain alone), then the best pairs at the knee whose figures differ from "
              "those already taken. (4) For each finalist, the highest load "
              "meeting the goal target: the grid (extended down or up until bracketed), "
              "then rounds of bisection; the ratio is that load over the baseline's. The "
              "search takes the first failure when attainment is not monotone in load. "
              "'Waiting at end' counts requests without a first token when the last request "
              "arrived; a large value means the load exceeds what the cluster sustains and "
              "the figure owes something to the trace ending (the backlog drains after the "
              "last arrival).", "", "## Results", ""]
    for r in results:
        lines += study_sections(r)
    lines += ["## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots] + [
        "", f"Raw summaries (one row per run, every study): `{csv.name}`.", ""]
    path = out / f"{prefix}.md"
    path.write_text("\n".join(lines))
    return path
