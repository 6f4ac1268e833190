"""The planner: ranking, reasons, SLO effects, bad input, rate search, confirmation."""

from __future__ import annotations

import pytest

from control_plane.errors import ConfigError, ValidationError
from control_plane.parallelism import (
    COLUMNS,
    PlanError,
    PlanOptions,
    SLOTarget,
    WorkloadStats,
    format_plan,
    min_gpus,
    plan,
    plan_table,
    search_rate,
)
from control_plane.perf import get_gpu, get_model, load_coefficients

COEFFS = load_coefficients()
SLO = SLOTarget(ttft_s=2.0, tpot_s=0.1)


def run(model="llama-3-70b", gpu="h100", gpus=8, **kw):
    return plan(model, gpu, gpus, coeffs=COEFFS, **kw)


def test_ranking_table_with_reasons():
    p = run(slo=SLO)
    rows = plan_table(p)
    assert [r["rank"] for r in rows] == list(range(1, len(rows) + 1))
    assert set(rows[0]) == set(COLUMNS)
    assert rows[0]["reason"] == "winner" and rows[0]["feasible"]
    feasible = [r for r in rows if r["feasible"]]
    goodputs = [r["goodput_per_gpu"] for r in feasible]
    assert goodputs == sorted(goodputs, reverse=True)
    for r in feasible[1:]:
        assert r["reason"].endswith("below the winner"), r
    infeasible = [r for r in rows if not r["feasible"]]
    assert {r["config"] for r in infeasible} == {"tp1-pp1-dp8", "tp1-pp2-dp4", "tp2-pp1-dp4"}
    assert all(r["reason"].startswith("infeasible: ") and "does not fit" in r["reason"]
               for r in infeasible)
    assert p.configs_considered == len(rows) == 11
    w = p.winner.estimate.parallel
    assert p.vllm_args == (f"--tensor-parallel-size {w.tp} --pipeline-parallel-size {w.pp} "
                           f"--data-parallel-size {w.dp}")
    text = format_plan(p)
    assert "winner" in text and p.vllm_args in text


def test_planner_is_deterministic():
    a, b = run(slo=SLO), run(slo=SLO)
    assert plan_table(a) == plan_table(b) and format_plan(a) == format_plan(b)


def test_tighter_tpot_slo_moves_the_winner_toward_more_tp():
    for model, loose, tight in (("llama-3-70b", 0.1, 0.03), ("llama-3-8b", 0.1, 0.008)):
        lo = run(model, slo=SLOTarget(2.0, loose)).winner.estimate.parallel
        hi = run(model, slo=SLOTarget(2.0, tight)).winner.estimate.parallel
        assert hi.tp > lo.tp, (model, lo, hi)
    tps = [run(slo=SLOTarget(2.0, t)).winner.estimate.parallel.tp for t in (0.2, 0.05, 0.03)]
    assert tps == sorted(tps) and tps[-1] == 8


def test_moe_winner_gets_the_expert_parallel_flag():
    p = run("mixtral-8x7b", slo=SLO)
    assert p.winner.estimate.parallel.ep > 1
    assert p.vllm_flags[-1] == "--enable-expert-parallel"


def test_cost_objective_and_price():
    p = run("llama-3-8b", slo=SLO, objective="cost")
    costs = [r["usd_per_m_tokens"] for r in plan_table(p) if r["feasible"]]
    assert costs == sorted(costs)
    assert all("above the winner" in r.reason or "ties" in r.reason for r in p.rows[1:])
    doubled = run("llama-3-8b", slo=SLO, objective="cost",
                  options=PlanOptions(price_per_gpu_hour=6.0))
    assert doubled.winner.estimate.usd_per_m_tokens == pytest.approx(
        2 * p.winner.estimate.usd_per_m_tokens)


def test_trace_samples_drive_the_plan():
    class Trace:
        name = "t"
        prompt_tokens = [400, 900, 3000, 7000]
        output_tokens = [50, 300, 100, 600]
    p = run("llama-3-8b", workload_stats=Trace(), slo=SLO)
    assert p.workload.max_total_tokens == 7600
    assert p.winner.estimate.ttft_prompt_tokens == round(p.workload.prompt_at(0.99))


def test_unknown_model_or_gpu_lists_known_names():
    with pytest.raises(ConfigError, match=r"unknown model 'llama-9'.*llama-3-70b"):
        run("llama-9")
    with pytest.raises(ConfigError, match=r"unknown GPU 'b300'.*h100"):
        run(gpu="b300")
    with pytest.raises(ConfigError, match=r"unknown objective 'speed'.*goodput, cost"):
        run(objective="speed")
    with pytest.raises(ValidationError, match="top_k"):
        run(top_k=0)


def test_budget_too_small_says_what_is_needed():
    with pytest.raises(PlanError) as info:
        run(gpus=1)
    msg = str(info.value)
    assert msg.startswith("llama-3-70b needs at least 4 x h100 (80 GB) for weights + KV")
    assert "budget is 1" in msg and "tp4-pp1" in msg and "weights 141.1 GB" in msg
    # with vLLM's memory fraction raised to 0.95, two GPUs (TP=2) are enough
    roomy = PlanOptions(gpu_memory_utilization=0.95)
    with pytest.raises(PlanError, match=r"needs at least 2 x h100 .* budget is 1"):
        run(gpus=1, options=roomy)
    assert run(gpus=2, options=roomy).winner.config == "tp2-pp1-dp1"
    assert min_gpus(get_model("llama-3-8b"), get_gpu("h100"), WorkloadStats.fixed()) == (
        1, ["tp1-pp1"])


def test_impossible_slo_says_the_best_achievable():
    with pytest.raises(PlanError) as info:
        run(slo=SLOTarget(ttft_s=2.0, tpot_s=0.005))
    msg = str(info.value)
    assert "no configuration of 8 x h100 meets TTFT p99 <= 2.00 s, TPOT p99 <= 5 ms" in msg
    assert "best achievable TPOT is 15 ms (tp8-pp1-dp1" in msg
    assert len(info.value.estimates) == 11


# -- rate search and simulator confirmation --------------------------------------------------


@pytest.mark.parametrize("threshold", [5.0, 7.0, 9.99, 10.0, 14.2, 19.9])
def test_rate_search_finds_the_threshold_of_a_monotone_function(threshold):
    """Threshold within [r0 / 2, 2 r0]: located to 1 % in at most 10 evaluations."""
    def att(rate):
        return 1.0 if rate <= threshold else 0.5

    s = search_rate(att, 10.0, 0.99)
    assert len(s.evaluations) <= 10 and s.bracketed
    assert s.rate_per_s <= threshold < s.upper_per_s
    assert threshold - s.rate_per_s <= 0.01 * threshold
    assert s.attainment == 1.0
    assert search_rate(att, 10.0, 0.99) == s


@pytest.mark.parametrize("threshold", [0.4, 1.0, 33.0, 79.0])
def test_rate_search_far_from_the_estimate_still_brackets(threshold):
    s = search_rate(lambda r: 1.0 if r <= threshold else 0.0, 10.0)
    assert len(s.evaluations) <= 10 and s.bracketed
    assert s.rate_per_s <= threshold < s.upper_per_s
    assert threshold - s.rate_per_s <= 0.1 * threshold


def test_rate_search_unreachable_and_unbounded():
    never = search_rate(lambda r: 0.0, 5.0)
    assert never.rate_per_s == 0 and not never.bracketed and len(never.evaluations) == 6
    always = search_rate(lambda r: 1.0, 5.0)
    assert always.rate_per_s == 40.0 and not always.bracketed


def fake_confirm(frac_by_pp):
    """Attainment 1 up to frac x the analytic max rate, then dropping: a monotone stand-in
    for the simulator, deterministic."""
    calls = []

    def confirm(e, rate):
        calls.append((str(e.parallel), rate))
        limit = frac_by_pp(e.parallel.pp) * e.rate_per_s
        return 1.0 if rate <= limit else max(0.0, 1.0 - (rate - limit) / limit)
    return confirm, calls


def test_confirmation_reranks_the_top_candidates():
    analytic = run(slo=SLO)
    top3 = [r.config for r in analytic.rows[:3]]
    confirm, calls = fake_confirm(lambda pp: 0.5 if pp > 1 else 0.9)
    p = run(slo=SLO, confirm=confirm, top_k=3)
    assert p.confirmed and {c for c, _ in calls} == set(top3)
    assert len(calls) <= 30
    w = p.winner
    assert w.estimate.parallel.pp == 1 and w.reason.startswith("winner (simulated")
    assert w.search.rate_per_s == pytest.approx(0.9 * w.estimate.rate_per_s, rel=0.01)
    assert w.confirmed_goodput_per_gpu == pytest.approx(w.search.rate_per_s * 256 / 8)
    assert all(r.reason.endswith("(simulated)") for r in p.rows[1:3])
    assert p.rows[3].reason.startswith("not simulated (outside the top 3)")
    assert plan_table(p)[0]["confirmed_rate_per_s"] != ""
    again, _ = fake_confirm(lambda pp: 0.5 if pp > 1 else 0.9)
    assert plan_table(run(slo=SLO, confirm=again, top_k=3)) == plan_table(p)


def test_confirmation_that_never_meets_the_target_is_an_error():
    with pytest.raises(PlanError, match="no candidate reaches 99% SLO attainment"):
        run(slo=SLO, confirm=lambda e, r: 0.5)
