"""Adaptive policy: scripted signals trigger switches with causes; dwell; queue preserved."""

from __future__ import annotations

from control_plane.actions import Outcome, PolicySwitch
from control_plane.policies import AdaptivePolicy, create_policy
from tests.builders import cluster, req

MET = Outcome(ttft_s=0.1, e2e_s=1.0)
MISSED = Outcome(ttft_s=5.0, e2e_s=6.0)


def make(**kw) -> AdaptivePolicy:
    params = dict(window=10, min_samples=5, min_dwell_s=10.0)
    params.update(kw)
    return create_policy({"type": "adaptive", "params": params})


def finish(p, state, outcomes, slo=True):
    v = state["i0"]
    for k, o in enumerate(outcomes):
        r = req(f"f{k}", ttft=1.0) if slo else req(f"f{k}")
        p.on_finish(r, v, o, 0.0)


def test_starts_in_base_policy_and_delegates_flags():
    p = make()
    assert p.name == "adaptive" and p.active == "fifo"
    assert p.preempt_queued is False and p.restricts_candidates is False
    assert p.policies == ("fifo", "priority", "slo", "cost")
    p.switch_to("cost", 0.0, "test")
    assert p.restricts_candidates is True
    p.switch_to("priority", 0.0, "test")
    assert p.preempt_queued is True


def test_low_attainment_switches_to_slo_with_cause():
    state = cluster(2, max_inflight=4)  # capacity 8
    p = make()
    finish(p, state, [MET] * 4)
    assert p.attainment is None  # below min_samples
    assert p.tick(0.0, state.view) == []
    finish(p, state, [MISSED] * 6)  # 4 of 10 met
    sw = p.tick(1.0, state.view)
    assert sw == [PolicySwitch(1.0, "fifo", "slo", "attainment 0.40 < 0.90 over last 10")]
    assert p.switches == sw and p.active == "slo"


def test_unmeasured_outcomes_do_not_count_and_failures_miss():
    state = cluster(1)
    p = make()
    finish(p, state, [Outcome()] * 10)
    assert p.attainment is None
    finish(p, state, [MET] * 4 + [Outcome(ok=False)])
    assert p.attainment == 0.8


def test_dwell_prevents_flapping_and_calm_returns_to_base():
    state = cluster(2, max_inflight=4)
    p = make()
    finish(p, state, [MISSED] * 10)
    assert [s.to_policy for s in p.tick(1.0, state.view)] == ["slo"]
    finish(p, state, [MET] * 10)  # attainment 1.0, queue empty: calm
    assert p.tick(5.0, state.view) == []  # 4 s since the switch < 10 s dwell
    assert p.tick(10.9, state.view) == []
    assert p.tick(11.0, state.view) == [PolicySwitch(
        11.0, "slo", "fifo", "queue/capacity 0.00 < 0.25 and attainment 1.00 > 0.95 over last 10")]
    assert [(s.from_policy, s.to_policy) for s in p.switches] == [("fifo", "slo"),
                                                                   ("slo", "fifo")]


def test_hysteresis_band_keeps_current_policy():
    state = cluster(2, max_inflight=4)
    p = make()
    finish(p, state, [MISSED] * 10)
    p.tick(0.0, state.view)
    finish(p, state, [MET] * 9 + [MISSED])  # 0.90: neither < 0.90 nor > 0.95
    assert p.tick(100.0, state.view) == []
    assert p.active == "slo"


def test_overload_with_mixed_priorities_and_no_slos_switches_to_priority():
    state = cluster(2, max_inflight=4)
    p = make()
    finish(p, state, [MET] * 3, slo=False)
    state.queue_changed(0, 5)
    state.queue_changed(4, 10)  # 15 queued / 8 = 1.875
    assert p.tick(0.0, state.view) == [PolicySwitch(
        0.0, "fifo", "priority", "queue/capacity 1.88 > 1.00 (utilisation 0.00), priorities "
        "[0, 4] queued, no SLO requests in the last 10 finished")]
    assert p.preempt_queued is True


def test_overload_with_one_priority_and_no_slos_stays():
    state = cluster(2, max_inflight=4)
    p = make()
    state.queue_changed(2, 20)
    assert p.tick(0.0, state.view) == []


def test_overload_with_slo_traffic_switches_to_slo():
    state = cluster(2, max_inflight=4)
    p = make()
    finish(p, state, [MET])  # one SLO request finished recently; attainment unknown
    state.queue_changed(2, 9)
    state.dispatched(state["i0"], req("x"))
    assert p.tick(3.0, state.view) == [PolicySwitch(
        3.0, "fifo", "slo",
        "queue/capacity 1.12 > 1.00 (utilisation 0.12) with SLO traffic")]


def test_queued_requests_preserved_exactly_across_switch():
    state = cluster(2, max_inflight=4)
    p = make()
    rs = [req("n0", 0.0), req("d9", 1.0, ttft=9.0), req("n1", 2.0), req("d1", 3.0, ttft=1.0),
          req("d5", 4.0, ttft=5.0)]
    for r in rs:
        p.push(r, r.arrival_s)
    assert p.remove("n1")
    assert p.peek().request_id == "n0"  # fifo
    finish(p, state, [MISSED] * 10)
    assert [s.to_policy for s in p.tick(10.0, state.view)] == ["slo"]
    assert len(p) == 4
    assert len(p.inner("fifo")) == 0
    assert [p.pop().request_id for _ in range(len(p))] == ["d1", "d5", "d9", "n0"]  # EDF


def test_bookkeeping_reaches_inactive_policies():
    state = cluster(1, price_per_hour_usd=3600.0, tokens_per_s=1000.0)
    p = make()
    r = req("r", prompt=10, output=10, tenant="acme")
    p.on_dispatch(r, state["i0"], 0.0)
    cost = p.inner("cost")
    assert cost.reserved_usd("acme") > 0
    p.on_finish(r, state["i0"], Outcome(output_tokens=10), 1.0)
    assert cost.reserved_usd("acme") == 0.0
    assert cost.spent_usd("acme") > 0


def test_target_not_configured_is_skipped():
    state = cluster(2, max_inflight=4)
    p = make(policies=["fifo", "priority"])
    finish(p, state, [MISSED] * 10)
    assert p.tick(0.0, state.view) == []
    assert p.active == "fifo"


def test_base_policy_cost_when_calm():
    state = cluster(2, max_inflight=4)
    p = make(base_policy="cost")
    assert p.active == "cost"
    finish(p, state, [MISSED] * 10)
    assert [s.to_policy for s in p.tick(0.0, state.view)] == ["slo"]
    finish(p, state, [MET] * 10)
    sw = p.tick(20.0, state.view)
    assert [(s.from_policy, s.to_policy) for s in sw] == [("slo", "cost")]


def test_sample_needs_the_constrained_measurement():
    state = cluster(1)
    p = make()
    v = state["i0"]
    for k in range(5):
        # TTFT-constrained, only e2e measured (a non-streaming driver): not a sample
        p.on_finish(req(f"a{k}", ttft=1.0), v, Outcome(e2e_s=0.5), 0.0)
    assert p.attainment is None
    for k in range(5):
        p.on_finish(req(f"b{k}", e2e=1.0), v, Outcome(e2e_s=2.0), 0.0)
    assert p.attainment == 0.0
