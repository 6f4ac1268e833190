"""Fair policy (VTC): exact service order, counter lifting, charges and corrections."""

from __future__ import annotations

import pytest

from control_plane.actions import Outcome
from control_plane.policies import FairPolicy
from tests.builders import cluster, req

# default weights w_in=1, w_out=2: a 100-prompt, 10-output request costs 120


def a(k, arrival=None, **kw):
    return req(f"a{k}", arrival=k * 0.1 if arrival is None else arrival, tenant="A", **kw)


def b(k, arrival=None, **kw):
    return req(f"b{k}", arrival=1.0 + k * 0.1 if arrival is None else arrival, tenant="B", **kw)


def pop_n(p, n=None):
    n = len(p) if n is None else n
    return [p.pop().request_id for _ in range(n)]


@pytest.mark.parametrize("params, requests, expected", [
    # A floods (6 queued before B's 2 arrive); VTC interleaves, FIFO would serve a0..a5 first
    ({}, [*(a(k) for k in range(6)), b(0), b(1)],
     ["a0", "b0", "a1", "b1", "a2", "a3", "a4", "a5"]),
    # B's requests are 4x cheaper (20 prompt + 5 output = 30): four of B per one of A
    ({}, [*(a(k) for k in range(4)), *(b(k, prompt=20, output=5) for k in range(6))],
     ["a0", "b0", "b1", "b2", "b3", "a1", "b4", "b5", "a2", "a3"]),
    # A has weight 2: its requests charge 60
    ({"tenant_weights": {"A": 2.0}}, [*(a(k) for k in range(4)), *(b(k) for k in range(4))],
     ["a0", "b0", "a1", "a2", "b1", "a3", "b2", "b3"]),
    # w_out=10: B's 10-output requests cost 100 + 100 = 200, A's 1-output ones 110;
    # counters after each pop: A110 B200 A220 B400 A330 A440 B600
    ({"w_out": 10.0}, [*(a(k, output=1) for k in range(4)), *(b(k) for k in range(3))],
     ["a0", "b0", "a1", "b1", "a2", "a3", "b2"]),
])
def test_dispatch_order_table(params, requests, expected):
    p = FairPolicy(**params)
    for r in requests:
        p.push(r, 0.0)
    assert pop_n(p) == expected


def test_counters_after_service():
    p = FairPolicy()
    for r in (a(0), a(1), b(0, prompt=20, output=5)):
        p.push(r, 0.0)
    pop_n(p)
    assert p.counters() == {"A": 240.0, "B": 30.0}


def test_newly_backlogged_tenant_is_lifted_to_min_backlogged_counter():
    p = FairPolicy()
    for k in range(6):
        p.push(a(k), 0.0)
    assert pop_n(p, 3) == ["a0", "a1", "a2"]
    assert p.counter("A") == 360.0
    p.push(b(0), 1.0)
    p.push(b(1), 1.0)
    assert p.counter("B") == 360.0  # not 0: B cannot claim 3 requests of banked credit
    assert pop_n(p) == ["a3", "b0", "a4", "b1", "a5"]


def test_lift_when_nobody_is_backlogged_uses_last_tenant_to_leave():
    p = FairPolicy()
    p.push(a(0), 0.0)
    p.push(a(1), 0.0)
    pop_n(p)
    assert p.counter("A") == 240.0
    p.push(b(0), 5.0)
    assert p.counter("B") == 240.0


def test_lift_never_lowers_a_counter():
    p = FairPolicy()
    for k in range(3):
        p.push(b(k), 0.0)
    pop_n(p)  # B: 360
    p.push(a(0), 1.0)  # lifted to 360 (B left last)
    p.push(b(3), 1.0)  # B keeps max(360, min backlogged 360)
    assert p.counters() == {"A": 360.0, "B": 360.0}
    assert pop_n(p) == ["a0", "b3"]


def test_finish_corrects_to_actual_output_and_retry_refunds():
    state = cluster(1)
    v = state["i0"]
    p = FairPolicy()
    r = a(0)
    p.push(r, 0.0)
    assert p.pop() is r
    p.on_dispatch(r, v, 0.0)  # already charged in pop: not twice
    assert p.counter("A") == 120.0
    p.on_finish(r, v, Outcome(output_tokens=25), 1.0)  # 15 more outputs x w_out 2
    assert p.counter("A") == 150.0
    p.on_finish(r, v, Outcome(), 1.0)  # no token count: no correction
    assert p.counter("A") == 150.0
    r2 = a(1)
    p.on_dispatch(r2, v, 2.0)  # dispatched without pop (empty queue): charged here
    assert p.counter("A") == 270.0
    p.on_retry(r2, v, 2.5)
    assert p.counter("A") == 150.0


def test_counter_changes_reorder_backlogged_tenants():
    state = cluster(1)
    v = state["i0"]
    p = FairPolicy()
    for r in (a(0), a(1), b(0), b(1)):
        p.push(r, 0.0)
    first = p.pop()
    assert first.request_id == "a0"
    p.on_dispatch(first, v, 0.0)
    p.on_finish(first, v, Outcome(output_tokens=1), 0.5)  # A: 120 - 18 = 102
    assert pop_n(p) == ["b0", "a1", "b1"]


def test_remove_last_request_of_tenant_unbacklogs_it():
    p = FairPolicy()
    p.push(a(0), 0.0)
    p.push(b(0), 0.0)
    assert p.remove("a0")
    assert pop_n(p) == ["b0"]
    assert len(p) == 0 and p.peek() is None
