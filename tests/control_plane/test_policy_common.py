"""Behaviour every registered queue policy shares: queue ops, drain order, config errors."""

from __future__ import annotations

import pytest

from control_plane.errors import ConfigError
from control_plane.policies import POLICIES, create_policy
from tests.builders import req

NAMES = ["fifo", "priority", "slo", "cost", "fair", "adaptive"]


def mixed_requests():
    """Pushed out of arrival order, with mixed priorities, tenants and SLOs."""
    return [
        req("r3", arrival=3.0, priority=0, tenant="a", ttft=9.0),
        req("r1", arrival=1.0, priority=4, tenant="b"),
        req("r4", arrival=4.0, priority=1, tenant="a", ttft=1.0),
        req("r0", arrival=0.0, priority=2, tenant="c", e2e=50.0),
        req("r2", arrival=2.0, priority=3, tenant="b"),
    ]


def pop_all(policy):
    out = []
    while len(policy):
        assert policy.peek() is not None
        out.append(policy.pop().request_id)
    assert policy.peek() is None
    return out


def test_registry_has_exactly_the_builtin_names():
    assert set(NAMES) <= set(POLICIES.names())


@pytest.mark.parametrize("name", NAMES)
def test_drain_returns_arrival_order_and_empties(name):
    p = create_policy(name)
    for r in mixed_requests():
        p.push(r, 5.0)
    assert len(p) == 5
    assert [r.request_id for r in p.drain()] == ["r0", "r1", "r2", "r3", "r4"]
    assert len(p) == 0
    assert p.peek() is None


@pytest.mark.parametrize("name", NAMES)
def test_remove_and_len(name):
    p = create_policy(name)
    for r in mixed_requests():
        p.push(r, 5.0)
    assert p.remove("r2") is True
    assert p.remove("r2") is False
    assert p.remove("nope") is False
    assert len(p) == 4
    popped = pop_all(p)
    assert sorted(popped) == ["r0", "r1", "r3", "r4"]
    assert len(p) == 0


@pytest.mark.parametrize("name", NAMES)
def test_every_request_popped_exactly_once(name):
    p = create_policy(name)
    rs = mixed_requests()
    for r in rs:
        p.push(r, 5.0)
    assert sorted(pop_all(p)) == sorted(r.request_id for r in rs)
    with pytest.raises(IndexError):
        p.pop()


@pytest.mark.parametrize("name", NAMES)
def test_remove_then_push_again_is_not_duplicated(name):
    p = create_policy(name)
    r = req("r0", arrival=0.0)
    p.push(r, 0.0)
    p.push(req("r1", arrival=1.0), 1.0)
    assert p.remove("r0")
    p.push(r, 2.0)  # a retried request comes back with its original arrival
    assert len(p) == 2
    assert sorted(pop_all(p)) == ["r0", "r1"]


def test_fifo_order():
    p = create_policy("fifo")
    for r in mixed_requests():
        p.push(r, 5.0)
    assert pop_all(p) == ["r0", "r1", "r2", "r3", "r4"]


@pytest.mark.parametrize("spec, attr, value", [
    ({"type": "priority", "params": {"aging_s": 5, "preempt_queued": False}}, "aging_s", 5.0),
    ({"type": "priority", "params": {"preempt_queued": False}}, "preempt_queued", False),
    ({"type": "slo", "params": {"slack_s": 0.5, "shed_infeasible": False}}, "slack_s", 0.5),
    ({"type": "slo", "params": {"default_deadline_s": 30}}, "default_deadline_s", 30.0),
    ({"type": "cost", "params": {"tenant_budgets_usd": {"acme": 2}}}, "tenant_budgets_usd",
     {"acme": 2.0}),
    ({"type": "cost", "params": {"order": "edf"}}, "order", "edf"),
    ({"type": "fair", "params": {"w_in": 1, "w_out": 4}}, "w_out", 4.0),
    ({"type": "fair", "params": {"tenant_weights": {"a": 3}}}, "tenant_weights", {"a": 3.0}),
    ({"type": "adaptive", "params": {"policies": ["fifo", "slo"], "window": 50}}, "policies",
     ("fifo", "slo")),
])
def test_create_from_dict_spec(spec, attr, value):
    assert getattr(create_policy(spec), attr) == value


def test_adaptive_inner_specs_carry_params():
    p = create_policy({"type": "adaptive", "params": {
        "policies": ["fifo", {"type": "slo", "params": {"slack_s": 0.25}}]}})
    assert p.inner("slo").slack_s == 0.25


@pytest.mark.parametrize("name", NAMES)
def test_unknown_param_is_config_error(name):
    with pytest.raises(ConfigError, match="bogus"):
        create_policy({"type": name, "params": {"bogus": 1}})


@pytest.mark.parametrize("name, params, needle", [
    ("priority", {"aging_s": -1}, "aging_s=-1"),
    ("priority", {"aging_s": 0}, "aging_s=0"),
    ("priority", {"aging_s": "soon"}, "aging_s='soon'"),
    ("priority", {"preempt_queued": "yes"}, "preempt_queued='yes'"),
    ("slo", {"shed_infeasible": 1}, "shed_infeasible=1"),
    ("slo", {"slack_s": float("nan")}, "slack_s=nan"),
    ("slo", {"default_deadline_s": -3}, "default_deadline_s=-3"),
    ("cost", {"tenant_budgets_usd": {"acme": -1}}, "tenant_budgets_usd['acme']=-1"),
    ("cost", {"tenant_budgets_usd": [1]}, "tenant_budgets_usd=[1]"),
    ("cost", {"default_budget_usd": -0.5}, "default_budget_usd=-0.5"),
    ("cost", {"margin_s": -1}, "margin_s=-1"),
    ("cost", {"order": "lifo"}, "order='lifo'"),
    ("fair", {"w_in": -1}, "w_in=-1"),
    ("fair", {"w_in": 0, "w_out": 0}, "w_in=0"),
    ("fair", {"tenant_weights": {"a": 0}}, "tenant_weights['a']=0"),
    ("fair", {"default_weight": 0}, "default_weight=0"),
    ("adaptive", {"policies": []}, "policies=[]"),
    ("adaptive", {"policies": ["fifo", "adaptive"]}, "adaptive"),
    ("adaptive", {"policies": ["fifo", "fifo"]}, "twice"),
    ("adaptive", {"policies": ["fifo", "nope"]}, "nope"),
    ("adaptive", {"base_policy": "fair"}, "base_policy='fair'"),
    ("adaptive", {"window": 0}, "window=0"),
    ("adaptive", {"window": 5, "min_samples": 6}, "min_samples=6"),
    ("adaptive", {"attainment_low": 1.5}, "attainment_low=1.5"),
    ("adaptive", {"attainment_low": 0.9, "attainment_high": 0.8}, "attainment_low=0.9"),
    ("adaptive", {"load_low": 2.0, "load_high": 1.0}, "load_low=2.0"),
    ("adaptive", {"min_dwell_s": -1}, "min_dwell_s=-1"),
])
def test_bad_param_value_is_config_error_naming_it(name, params, needle):
    with pytest.raises(ConfigError) as info:
        create_policy({"type": name, "params": params})
    assert needle in str(info.value)


@pytest.mark.parametrize("cls_name, params", [
    ("PriorityPolicy", {"aging_s": -2}),
    ("FairPolicy", {"w_out": -2}),
])
def test_direct_construction_raises_value_error(cls_name, params):
    import control_plane.policies as pol

    with pytest.raises(ValueError, match=next(iter(params))):
        getattr(pol, cls_name)(**params)
