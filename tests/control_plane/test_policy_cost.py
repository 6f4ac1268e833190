"""Cost policy: cheapest class meeting the SLO, fallback to the fastest, tenant budgets."""

from __future__ import annotations

import pytest

from control_plane.actions import Outcome, RejectCause
from control_plane.cluster import ClusterState
from control_plane.policies import CostPolicy
from control_plane.types import EngineStats, InstanceSpec
from tests.builders import req


def priced() -> ClusterState:
    """Two cheap slow instances ($0.001/token, 1000 prefill tok/s) and one dear fast one
    ($0.01/token, 10000 prefill tok/s)."""
    cheap = dict(price_per_hour_usd=3600.0, tokens_per_s=1000.0, prefill_tokens_per_s=1000.0)
    dear = dict(price_per_hour_usd=36000.0, tokens_per_s=1000.0, prefill_tokens_per_s=10000.0)
    return ClusterState([InstanceSpec("x0", **dear), InstanceSpec("c0", **cheap),
                         InstanceSpec("c1", **cheap)])


def ids(views):
    return [v.instance_id for v in views]


@pytest.mark.parametrize("r, expected", [
    # no SLO: cheapest class
    (req("a", prompt=1000), ["c0", "c1"]),
    # TTFT 1.0 s on cheap meets 2.0
    (req("b", prompt=1000, ttft=2.0), ["c0", "c1"]),
    # cheap 1.0 s misses 0.5; dear 0.1 s meets it
    (req("c", prompt=1000, ttft=0.5), ["x0"]),
    # nobody meets 0.05: fall back to the fastest class
    (req("d", prompt=1000, ttft=0.05), ["x0"]),
    # e2e: cheap 1.0 + 0.02 x 9 = 1.18 s meets 1.5
    (req("e", prompt=1000, output=10, e2e=1.5), ["c0", "c1"]),
    # e2e: cheap 1.18 s misses 1.1; dear 0.1 + 0.18 = 0.28 s meets it
    (req("f", prompt=1000, output=10, e2e=1.1), ["x0"]),
])
def test_cheapest_class_meeting_slo(r, expected):
    state = priced()
    p = CostPolicy()
    assert p.restricts_candidates is True
    assert ids(p.candidates(r, state.view.candidates, state.view, 0.0)) == expected


def test_only_members_meeting_the_slo_are_returned():
    state = priced()
    # c0 has 1000 prompt tokens waiting in its engine: +1 s
    state.dispatched(state["c0"], req("busy", prompt=1000))
    state.observed(state["c0"], EngineStats(running=0, waiting=1), 0.0)
    r = req("r", prompt=1000, ttft=1.5)
    assert ids(CostPolicy().candidates(r, state.view.candidates, state.view, 0.0)) == ["c1"]


def test_margin_requires_headroom():
    state = priced()
    r = req("r", prompt=1000, ttft=1.2)  # cheap: 1.0 s, 0.2 s to spare
    assert ids(CostPolicy(margin_s=0.1).candidates(
        r, state.view.candidates, state.view, 0.0)) == ["c0", "c1"]
    assert ids(CostPolicy(margin_s=0.3).candidates(
        r, state.view.candidates, state.view, 0.0)) == ["x0"]


def test_time_already_waited_counts():
    state = priced()
    r = req("r", arrival=0.0, prompt=1000, ttft=2.0)
    assert ids(CostPolicy().candidates(r, state.view.candidates, state.view, 1.5)) == ["x0"]


def test_budget_exhausted_rejection_with_detail():
    state = priced()
    p = CostPolicy(tenant_budgets_usd={"acme": 0.05})
    v = state["c0"]
    # 10 prompt + 10 output tokens = $0.02 on a cheap instance
    done = req("done", prompt=10, output=10, tenant="acme")
    assert p.admit(done, state.view, 0.0) is None
    p.on_dispatch(done, v, 0.0)
    p.on_finish(done, v, Outcome(output_tokens=10), 1.0)
    flying = req("flying", prompt=10, output=10, tenant="acme")
    assert p.admit(flying, state.view, 1.0) is None
    p.on_dispatch(flying, v, 1.0)
    assert p.spent_usd("acme") == pytest.approx(0.02)
    assert p.reserved_usd("acme") == pytest.approx(0.02)
    cause, detail = p.admit(req("r3", prompt=10, output=10, tenant="acme"), state.view, 2.0)
    assert cause is RejectCause.BUDGET_EXHAUSTED
    assert detail == ("tenant acme spent $0.0200 + reserved $0.0200 of $0.0500; this request "
                      "needs at least $0.0200 on the cheapest instance (c0)")
    # another tenant is unaffected; the default budget is unlimited
    assert p.admit(req("other", prompt=10, output=10, tenant="beta"), state.view, 2.0) is None


def test_request_budget_below_cheapest_cost():
    state = priced()
    cause, detail = CostPolicy().admit(
        req("r1", prompt=10, output=10, budget=0.01), state.view, 0.0)
    assert cause is RejectCause.BUDGET_EXHAUSTED
    assert detail == "r1: cost budget $0.0100 is below the cheapest possible cost $0.0200 (c0)"
    assert CostPolicy().admit(req("r2", prompt=10, output=10, budget=0.02),
                              state.view, 0.0) is None


def test_default_budget_applies_to_unlisted_tenants():
    state = priced()
    p = CostPolicy(tenant_budgets_usd={"rich": 10.0}, default_budget_usd=0.01)
    assert p.admit(req("a", prompt=10, output=10, tenant="rich"), state.view, 0.0) is None
    assert p.admit(req("b", prompt=10, output=10, tenant="poor"), state.view, 0.0)[0] is (
        RejectCause.BUDGET_EXHAUSTED)


def test_queued_requests_hold_budget_and_release_on_reject():
    state = priced()
    p = CostPolicy(tenant_budgets_usd={"acme": 0.05})
    a, b = (req(k, prompt=10, output=10, tenant="acme") for k in "ab")
    assert p.admit(a, state.view, 0.0) is None
    assert p.admit(b, state.view, 0.0) is None
    assert p.reserved_usd("acme") == pytest.approx(0.04)
    assert p.admit(req("c", prompt=10, output=10, tenant="acme"), state.view, 0.0) is not None
    p.on_reject(b, RejectCause.QUEUE_FULL, 0.0)
    assert p.reserved_usd("acme") == pytest.approx(0.02)
    assert p.admit(req("c", prompt=10, output=10, tenant="acme"), state.view, 0.0) is None


def test_reservation_released_on_retry_and_charged_on_finish():
    state = priced()
    p = CostPolicy(tenant_budgets_usd={"acme": 1.0})
    r = req("r", prompt=10, output=10, tenant="acme")
    x0 = state["x0"]
    assert p.admit(r, state.view, 0.0) is None
    assert p.reserved_usd("acme") == pytest.approx(0.02)  # cheapest: c0
    p.on_dispatch(r, x0, 0.0)
    assert p.reserved_usd("acme") == pytest.approx(0.2)  # 20 tokens x $0.01 on x0
    p.on_retry(r, x0, 0.5)
    assert p.reserved_usd("acme") == 0.0
    assert p.spent_usd("acme") == 0.0
    p.on_dispatch(r, state["c1"], 1.0)
    assert p.reserved_usd("acme") == pytest.approx(0.02)
    p.on_finish(r, state["c1"], Outcome(output_tokens=5), 2.0)  # actual: 10 + 5 tokens
    assert p.reserved_usd("acme") == 0.0
    assert p.spent_usd("acme") == pytest.approx(0.015)
    assert p.ledger() == {"acme": (pytest.approx(0.015), 0.0)}


def test_finish_without_token_count_charges_expected():
    state = priced()
    p = CostPolicy()
    r = req("r", prompt=10, output=10, tenant="t")
    p.on_dispatch(r, state["c0"], 0.0)
    p.on_finish(r, state["c0"], Outcome(), 1.0)
    assert p.spent_usd("t") == pytest.approx(0.02)


def test_unaffordable_fast_class_is_skipped():
    state = priced()
    # $0.05 left: 20 tokens cost $0.02 cheap, $0.20 dear
    p = CostPolicy(tenant_budgets_usd={"acme": 0.05})
    r = req("r", prompt=10, output=10, tenant="acme", ttft=0.005)  # only x0 is fast enough
    assert p.admit(r, state.view, 0.0) is None
    assert ids(p.candidates(r, state.view.candidates, state.view, 0.0)) == ["c0", "c1"]
    unbudgeted = req("u", prompt=10, output=10, tenant="other", ttft=0.005)
    assert ids(p.candidates(unbudgeted, state.view.candidates, state.view, 0.0)) == ["x0"]


def test_fifo_and_edf_order():
    rs = [req("a", 0.0, ttft=9.0), req("b", 1.0, ttft=1.0), req("c", 2.0)]
    for order, expected in (("fifo", ["a", "b", "c"]), ("edf", ["b", "a", "c"])):
        p = CostPolicy(order=order)
        for r in rs:
            p.push(r, 0.0)
        assert [p.pop().request_id for _ in range(3)] == expected
