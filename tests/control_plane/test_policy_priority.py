"""Priority policy: strict levels, linear aging as a static key, preemption flag."""

from __future__ import annotations

import math

import pytest

from control_plane.policies import PriorityPolicy, create_policy
from tests.builders import req


def order(policy, requests):
    for r in requests:
        policy.push(r, 0.0)
    return [policy.pop().request_id for _ in range(len(policy))]


@pytest.mark.parametrize("aging_s, requests, expected", [
    # strict: level first, then arrival
    (None, [req("bg", 0.0, priority=4), req("crit", 5.0, priority=0),
            req("n1", 1.0, priority=2), req("n0", 0.5, priority=2)],
     ["crit", "n0", "n1", "bg"]),
    # inf is the same as None
    (math.inf, [req("bg", 0.0, priority=4), req("crit", 5.0, priority=0)], ["crit", "bg"]),
    # aging 1 s/level: level 4 arrived 5 s before level 0 -> keys 4.0 vs 5.0
    (1.0, [req("bg", 0.0, priority=4), req("crit", 5.0, priority=0)], ["bg", "crit"]),
    # only 3 s earlier -> keys 4.0 vs 3.0, critical first
    (1.0, [req("bg", 0.0, priority=4), req("crit", 3.0, priority=0)], ["crit", "bg"]),
    # equal effective key (4.0 both): the earlier arrival wins
    (1.0, [req("crit", 4.0, priority=0), req("bg", 0.0, priority=4)], ["bg", "crit"]),
    # aging 10 s/level: keys hi=1+0=1, lo=0+30=30, mid=2+10=12, late=40+0=40
    (10.0, [req("lo", 0.0, priority=3), req("hi", 1.0, priority=0),
            req("mid", 2.0, priority=1), req("late", 40.0, priority=0)],
     ["hi", "mid", "lo", "late"]),
    # same level and arrival: submission order
    (None, [req("x", 1.0), req("y", 1.0), req("z", 1.0)], ["x", "y", "z"]),
])
def test_dispatch_order(aging_s, requests, expected):
    assert order(PriorityPolicy(aging_s=aging_s), requests) == expected


def test_aging_key_is_static_in_now():
    """The aged order does not depend on when the requests were pushed."""
    rs = [req("bg", 0.0, priority=4), req("crit", 5.0, priority=0)]
    early, late = PriorityPolicy(aging_s=1.0), PriorityPolicy(aging_s=1.0)
    for r in rs:
        early.push(r, 5.0)
        late.push(r, 1000.0)
    assert early.queued() == late.queued() == [rs[0], rs[1]]


@pytest.mark.parametrize("spec, expected", [
    ("priority", True),
    ({"type": "priority", "params": {"preempt_queued": False}}, False),
    ("fifo", False),
    ("slo", False),
])
def test_preempt_queued_flag(spec, expected):
    assert create_policy(spec).preempt_queued is expected
