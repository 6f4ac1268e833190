"""Multi-tenant mixes: classes by share, per-class lengths and SLOs; poisson_mix on top."""

from __future__ import annotations

import numpy as np
import pytest

from control_plane.types import SLO
from workloads import poisson_mix
from workloads.lengths import Fixed, LengthModel
from workloads.mix import TenantClass, assign_classes, mix
from workloads.synthetic import DEFAULT_CLASSES, poisson_mix_trace
from workloads.trace import Trace

CLASSES = (
    TenantClass("chat", 0.5, 0, "chat", SLO(ttft_s=1.0, tpot_s=0.1), LengthModel(Fixed(10),
                                                                                  Fixed(5))),
    TenantClass("api", 0.5, 2, "api", SLO(ttft_s=3.0)),
    TenantClass("never", 0.0, 4, "nobody"),
)


def test_mix_assigns_classes_lengths_and_slos():
    arrivals = np.arange(200, dtype=float)
    t = mix(arrivals, CLASSES, seed=1, lengths=LengthModel(Fixed(100), Fixed(50)))
    assert isinstance(t, Trace) and np.array_equal(t.arrival_s, arrivals)
    chat = t.tenant == "chat"
    api = t.tenant == "api"
    assert chat.sum() + api.sum() == 200 and 60 < chat.sum() < 140
    assert set(t.priority[chat].tolist()) == {0} and set(t.priority[api].tolist()) == {2}
    assert (t.prompt_tokens[chat] == 10).all() and (t.output_tokens[chat] == 5).all()
    assert (t.prompt_tokens[api] == 100).all() and (t.output_tokens[api] == 50).all()
    assert (t.slo_ttft_s[chat] == 1.0).all() and (t.slo_tpot_s[chat] == 0.1).all()
    assert (t.slo_ttft_s[api] == 3.0).all() and np.isnan(t.slo_tpot_s[api]).all()
    assert np.isnan(t.slo_e2e_s).all()
    assert t.meta["classes"] == {"chat": int(chat.sum()), "api": int(api.sum()), "never": 0}
    first = next(iter(t))
    assert first.slo == (SLO(1.0, 0.1) if first.tenant == "chat" else SLO(3.0))
    again = mix(arrivals, CLASSES, seed=1, lengths=LengthModel(Fixed(100), Fixed(50)))
    assert np.array_equal(again.tenant, t.tenant)


def test_mix_draw_order_is_lengths_then_classes():
    rng = np.random.Generator(np.random.PCG64(3))
    lengths = LengthModel(Fixed(1), Fixed(1))  # fixed lengths consume no randomness
    kinds = rng.choice(3, size=20, p=[0.5, 0.5, 0.0])
    t = mix(np.zeros(20), CLASSES[1:2] + CLASSES[1:2] + CLASSES[2:], seed=3, lengths=lengths)
    assert t.tenant.tolist() == ["nobody" if k == 2 else "api" for k in kinds]


def test_poisson_mix_is_unchanged():
    """Values pinned from the original stand-alone implementation (seed 0, n=500, 10/s)."""
    reqs = list(poisson_mix(500, 10.0, seed=0))
    got = [(r.request_id, r.arrival_s, r.prompt_tokens, r.output_tokens, r.priority, r.tenant,
            r.session_id, r.slo) for r in reqs[:3]]
    assert got == [
        ("req-0", 0.06799319039689096, 912, 87, 4, "batch", "batch-0", SLO(e2e_s=120.0)),
        ("req-1", 0.16995290054347745, 290, 124, 0, "chat", "chat-1", SLO(1.0, 0.1)),
        ("req-2", 0.17193356680238298, 406, 121, 4, "batch", "batch-2", SLO(e2e_s=120.0)),
    ]
    trace = poisson_mix_trace(500, 10.0, seed=0)
    assert list(trace.requests()) == reqs and trace.meta["generator"] == "poisson_mix"
    assert {r.priority for r in reqs} == {c.priority for c in DEFAULT_CLASSES}


def test_assign_classes_keeps_lengths():
    base = Trace(np.arange(100.0), np.arange(1, 101), np.full(100, 7))
    t = assign_classes(base, CLASSES, seed=2)
    assert np.array_equal(t.prompt_tokens, base.prompt_tokens)
    assert np.array_equal(t.output_tokens, base.output_tokens)
    assert set(t.tenant.tolist()) == {"chat", "api"}
    assert t.meta["transforms"][-1]["op"] == "assign_classes"
    assert np.array_equal(assign_classes(base, CLASSES, seed=2).tenant, t.tenant)


@pytest.mark.parametrize(("classes", "message"), [
    ((), "at least one"),
    ((TenantClass("a", 1.0, 7, "t"),), r"classes\[0\].priority=7"),
    ((TenantClass("a", 1.0, 1, ""),), r"classes\[0\].tenant=''"),
    ((TenantClass("a", -1.0, 1, "t"),), "shares"),
    ((TenantClass("a", 0.0, 1, "t"),), "shares"),
    ((TenantClass("a", 1.0, 1, "t", slo=1.0),), r"classes\[0\].slo=1.0"),
])
def test_bad_classes(classes, message):
    with pytest.raises(ValueError, match=message):
        mix(np.zeros(3), classes)
