"""A plan as table rows (CSV-ready dicts) and as printable text.

Columns of :func:`plan_table` (units in the names; empty string where not applicable):
``rank, config, tp, pp, dp, ep, gpus_used, feasible, weights_gb_per_gpu,
experts_gb_per_gpu, kv_tokens, batch, batch_limit, ttft_s, tpot_s, max_rate_per_s,
tokens_per_s, goodput_per_gpu, usd_per_m_tokens, pp_bubble, pp_imbalance,
confirmed_rate_per_s, confirmed_goodput_per_gpu, reason``. ``goodput_per_gpu`` is output
tokens/s per GPU of the budget at the SLO; ``usd_per_m_tokens`` per million output tokens.
"""

from __future__ import annotations

import math

from control_plane.parallelism.planner import Plan, PlanRow

__all__ = ["COLUMNS", "format_plan", "plan_table"]

COLUMNS = ("rank", "config", "tp", "pp", "dp", "ep", "gpus_used", "feasible",
           "weights_gb_per_gpu", "experts_gb_per_gpu", "kv_tokens", "batch", "batch_limit",
           "ttft_s", "tpot_s", "max_rate_per_s", "tokens_per_s", "goodput_per_gpu",
           "usd_per_m_tokens", "pp_bubble", "pp_imbalance", "confirmed_rate_per_s",
           "confirmed_goodput_per_gpu", "reason")


def _num(v: float | None, digits: int = 4) -> float | str:
    if v is None or (isinstance(v, float) and (math.isnan(v) or math.isinf(v))):
        return ""
    return round(float(v), digits)


def row_dict(row: PlanRow) -> dict[str, object]:
    e, p, m = row.estimate, row.estimate.parallel, row.estimate.memory
    fits = e.memory.fits
    return {
        "rank": row.rank, "config": str(p), "tp": p.tp, "pp": p.pp, "dp": p.dp, "ep": p.ep,
        "gpus_used": p.total_gpus, "feasible": e.feasible,
        "weights_gb_per_gpu": _num(m.weights_bytes_per_gpu / 1e9, 2),
        "experts_gb_per_gpu": _num(m.expert_bytes_per_gpu / 1e9, 2),
        "kv_tokens": m.kv_tokens if fits else "",
        "batch": e.batch if e.feasible else "", "batch_limit": e.batch_limit,
        "ttft_s": _num(e.ttft_s), "tpot_s": _num(e.tpot_s, 5),
        "max_rate_per_s": _num(e.rate_per_s, 3), "tokens_per_s": _num(e.tokens_per_s, 1),
        "goodput_per_gpu": _num(e.goodput_per_gpu, 1),
        "usd_per_m_tokens": _num(e.usd_per_m_tokens, 4) if e.feasible else "",
        "pp_bubble": _num(e.pp_bubble, 3), "pp_imbalance": _num(e.pp_imbalance, 3),
        "confirmed_rate_per_s": _num(row.search.rate_per_s, 3) if row.search else "",
        "confirmed_goodput_per_gpu": _num(row.confirmed_goodput_per_gpu, 1),
        "reason": row.reason,
    }


def plan_table(plan: Plan) -> list[dict[str, object]]:
    """One dict per configuration, keys :data:`COLUMNS`, winner first."""
    return [row_dict(r) for r in plan.rows]


def _ms(v: float | str) -> str:
    return "-" if v == "" else f"{float(v) * 1e3:.0f}"


def format_plan(plan: Plan) -> str:
    """The ranking as aligned text, with the inputs above it and the winner's flags below."""
    head = [f"plan: {plan.model.name} on {plan.gpus} x {plan.gpu.name} "
            f"({plan.gpus_per_node} per node), objective {plan.objective}",
            f"workload: {plan.workload.describe()}",
            f"SLO: {plan.slo.describe()}; "
            f"{'simulator-confirmed' if plan.confirmed else 'analytic estimates only'}"]
    cols = ["#", "config", "GPUs", "wGB/GPU", "KV tok", "batch", "TTFT ms", "TPOT ms",
            "req/s", "tok/s/GPU", "$/Mtok"] + (["sim req/s"] if plan.confirmed else []) + [
            "reason"]
    body = []
    for d in plan_table(plan):
        cells = [str(d["rank"]), str(d["config"]), str(d["gpus_used"]),
                 f"{d['weights_gb_per_gpu']:.1f}", str(d["kv_tokens"] or "-"),
                 str(d["batch"] or "-"), _ms(d["ttft_s"]), _ms(d["tpot_s"]),
                 "-" if d["batch"] == "" else f"{d['max_rate_per_s']:.2f}",
                 "-" if d["batch"] == "" else f"{d['goodput_per_gpu']:.0f}",
                 "-" if d["usd_per_m_tokens"] == "" else f"{d['usd_per_m_tokens']:.3f}"]
        if plan.confirmed:
            c = d["confirmed_rate_per_s"]
            cells.append("-" if c == "" else f"{c:.2f}")
        body.append([*cells, str(d["reason"])])
    widths = [max(len(c), *(len(r[i]) for r in body)) for i, c in enumerate(cols)]
    fmt = [c.ljust(w) if i in (1, len(cols) - 1) else c.rjust(w)
           for i, (c, w) in enumerate(zip(cols, widths, strict=True))]
    lines = [*head, "", "  ".join(fmt).rstrip()]
    for r in body:
        lines.append("  ".join(v.ljust(w) if i in (1, len(cols) - 1) else v.rjust(w)
                               for i, (v, w) in enumerate(zip(r, widths, strict=True))).rstrip())
    w = plan.winner
    lines += ["", f"winner: {w.config} (batch {w.estimate.batch}, TPOT "
              f"{w.estimate.tpot_s * 1e3:.0f} ms, TTFT {w.estimate.ttft_s * 1e3:.0f} ms)",
              f"vllm serve <model> {plan.vllm_args}"]
    return "\n".join(lines)
