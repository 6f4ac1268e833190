"""SLO policy: EDF order, feasibility at admission, shedding from the head."""

from __future__ import annotations

import pytest

from control_plane.actions import RejectCause
from control_plane.cluster import ClusterState
from control_plane.policies import SloPolicy, infeasibility
from control_plane.types import InstanceSpec
from tests.builders import cluster, down, load, observe, req


def two_speeds() -> ClusterState:
    """i0 prefills 4000 tok/s, i1 8000 tok/s (the default)."""
    return ClusterState([InstanceSpec("i0", prefill_tokens_per_s=4000.0),
                         InstanceSpec("i1", prefill_tokens_per_s=8000.0)])


def pop_all(p):
    return [p.pop().request_id for _ in range(len(p))]


@pytest.mark.parametrize("params, requests, expected", [
    # TTFT deadlines: a 0+5=5, b 1+1=2, c 2+0.5=2.5
    ({}, [req("a", 0.0, ttft=5.0), req("b", 1.0, ttft=1.0), req("c", 2.0, ttft=0.5)],
     ["b", "c", "a"]),
    # e2e only: deadline arrival + e2e; TTFT wins over e2e when both are set
    ({}, [req("e", 0.0, e2e=3.0), req("t", 0.0, ttft=2.5, e2e=100.0), req("f", 0.0, e2e=2.0)],
     ["f", "t", "e"]),
    # TTFT + TPOT without e2e: the TTFT deadline orders it (0.4 < 1)
    ({}, [req("x", 0.0, e2e=1.0), req("y", 0.0, ttft=0.4, tpot=0.05)], ["y", "x"]),
    # no SLO: after every deadline, FIFO among themselves
    ({}, [req("n1", 0.0), req("d", 50.0, ttft=100.0), req("n0", 1.0), req("n2", 2.0)],
     ["d", "n1", "n0", "n2"]),
    # default deadline: no-SLO n gets 0 + 10 = 10, between 5 and 20
    ({"default_deadline_s": 10.0},
     [req("late", 0.0, ttft=20.0), req("n", 0.0), req("soon", 0.0, ttft=5.0)],
     ["soon", "n", "late"]),
    # equal deadlines: earlier arrival first
    ({}, [req("b", 1.0, ttft=1.0), req("a", 0.0, ttft=2.0)], ["a", "b"]),
])
def test_edf_order(params, requests, expected):
    p = SloPolicy(**params)
    for r in requests:
        p.push(r, 0.0)
    assert pop_all(p) == expected


def test_admit_rejects_infeasible_request_naming_it():
    state = two_speeds()
    # 8000 prompt tokens: 2.0 s on i0, 1.0 s on i1; TTFT deadline 0.5 s
    r = req("r7", arrival=0.0, prompt=8000, ttft=0.5)
    cause, detail = SloPolicy().admit(r, state.view, 0.0)
    assert cause is RejectCause.SLO_INFEASIBLE
    assert detail == "r7: TTFT deadline 0.500s, earliest estimated first token 1.000s (i1)"


@pytest.mark.parametrize("params, r, admitted", [
    ({}, req("ok", 0.0, prompt=8000, ttft=1.5), True),  # 1.0 s on i1 meets 1.5
    ({"shed_infeasible": False}, req("x", 0.0, prompt=8000, ttft=0.5), True),
    ({"slack_s": 0.6}, req("x", 0.0, prompt=8000, ttft=0.5), True),  # 1.0 <= 0.5 + 0.6
    ({"slack_s": -0.6}, req("x", 0.0, prompt=8000, ttft=1.5), False),  # 1.0 > 1.5 - 0.6
    ({}, req("noslo", 0.0, prompt=8000), True),
])
def test_admit_table(params, r, admitted):
    assert (SloPolicy(**params).admit(r, two_speeds().view, 0.0) is None) is admitted


def test_admit_checks_e2e_deadline():
    # prompt 100 on i1: 0.0125 s; 101 outputs at 0.02 s each after the first: 2.0 s more
    r = req("r9", arrival=0.0, prompt=100, output=101, e2e=1.5)
    cause, detail = SloPolicy().admit(r, two_speeds().view, 0.0)
    assert cause is RejectCause.SLO_INFEASIBLE
    assert detail == "r9: e2e deadline 1.500s, earliest estimated completion 2.013s (i1)"


def test_engine_backlog_counts_in_the_estimate():
    state = cluster(1)
    # 8000 prompt tokens in flight, all waiting in the engine: +1 s of prefill
    load(state, "i0", req("busy", prompt=8000))
    observe(state, "i0", running=0, waiting=1)
    r = req("r1", arrival=0.0, prompt=800, ttft=0.5)
    assert infeasibility(r, state.view, 0.0) == (
        "r1: TTFT deadline 0.500s, earliest estimated first token 1.100s (i0)")


def test_shed_drops_infeasible_head_and_stops_at_first_feasible():
    state = two_speeds()
    p = SloPolicy()
    # 800 prompt tokens: 0.1 s on i1
    p.push(req("r1", 0.0, prompt=800, ttft=1.0), 0.0)
    p.push(req("r2", 0.0, prompt=800, ttft=2.0), 0.0)
    p.push(req("r3", 0.0, prompt=8000, ttft=2.05), 0.0)  # infeasible, but behind r2
    p.push(req("r4", 0.0, prompt=800), 0.0)
    shed = p.shed(0.95, state.view)
    assert [(r.request_id, cause, detail) for r, cause, detail in shed] == [
        ("r1", RejectCause.SLO_INFEASIBLE,
         "r1: TTFT deadline 1.000s, earliest estimated first token 1.050s (i1)")]
    assert len(p) == 3 and p.peek().request_id == "r2"
    # later r2 and r3 are both late; the no-SLO r4 stops the walk
    shed = p.shed(1.95, state.view)
    assert [r.request_id for r, _, _ in shed] == ["r2", "r3"]
    assert [r.request_id for r in p.drain()] == ["r4"]


def test_shed_off_keeps_everything():
    p = SloPolicy(shed_infeasible=False)
    p.push(req("r1", 0.0, prompt=800, ttft=1.0), 0.0)
    assert p.shed(100.0, two_speeds().view) == []
    assert len(p) == 1


def test_no_routable_instance_sheds_only_passed_deadlines():
    state = two_speeds()
    down(state, "i0")
    down(state, "i1")
    p = SloPolicy()
    p.push(req("past", 0.0, ttft=1.0), 0.0)
    p.push(req("future", 0.0, ttft=10.0), 0.0)
    shed = p.shed(2.0, state.view)
    assert [(r.request_id, d) for r, _, d in shed] == [
        ("past", "past: TTFT deadline 1.000s passed at 2.000s (no routable instance)")]
    assert len(p) == 1
