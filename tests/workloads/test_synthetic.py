"""The seeded synthetic workload."""

from __future__ import annotations

import pytest

from workloads import DEFAULT_CLASSES, RequestClass, poisson_mix


def test_same_seed_same_requests_and_arrival_order():
    a = list(poisson_mix(500, 10.0, seed=7))
    b = list(poisson_mix(500, 10.0, seed=7))
    c = list(poisson_mix(500, 10.0, seed=8))
    assert a == b and a != c
    arrivals = [r.arrival_s for r in a]
    assert arrivals == sorted(arrivals)
    assert {r.priority for r in a} == {c.priority for c in DEFAULT_CLASSES}
    assert all(1 <= r.prompt_tokens <= 4096 and 1 <= r.output_tokens <= 1024 for r in a)


def test_single_class_mix():
    only = (RequestClass("x", 1.0, 1, "t"),)
    reqs = list(poisson_mix(20, 1.0, classes=only))
    assert {(r.priority, r.tenant, r.slo) for r in reqs} == {(1, "t", None)}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"n": -1}, "n=-1"), ({"rate_per_s": 0}, "rate_per_s=0"),
     ({"classes": ()}, "at least one request class")],
)
def test_bad_arguments(kwargs, message):
    args = {"n": 5, "rate_per_s": 1.0} | kwargs
    with pytest.raises(ValueError, match=message):
        list(poisson_mix(**args))
