"""The contention scale fitted on a training replay (sagellm.contention_fit): it recovers
the scale a replay was made with, stops at the bounds, and refuses bad arguments."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from control_plane.perf.profile import NEIGHBOUR_KEYS, SPIN_KEY
from control_plane.types import Request
from sagellm.contention_fit import fit_contention_scale, with_contention_scale
from sagellm.fidelity import sim_instances, sim_run
from sagellm.fidelity_stats import aligned
from sagellm.results import records_frame


def _requests(n=150, rate=4.0, seed=3):
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.exponential(1 / rate, n))
    return [Request(f"q{k}", float(t[k]), int(rng.integers(30, 300)),
                    output_tokens=int(o), max_tokens=int(o))
            for k, o in enumerate(rng.integers(10, 100, n))]


def _insts(speed=1.0):
    insts = sim_instances("vllm-cpu-llama-small-pinned", ["e0", "e1"], {"max_num_seqs": 16},
                          host="box")
    return [dataclasses.replace(i, predictor=i.predictor.scaled(speed, speed)) for i in insts]


def _replay(reqs, insts, scale):
    at = [dataclasses.replace(i, predictor=with_contention_scale(i.predictor, scale))
          for i in insts]
    res = sim_run(reqs, at, router="round_robin")
    return [aligned(records_frame(res.records), [r.request_id for r in reqs])]


def test_the_fit_recovers_the_scale_the_replay_was_made_with():
    reqs, insts = _requests(), _insts()
    live = _replay(reqs, insts, 0.6)        # a "live" replay where contention is 0.6 x profile
    fit = fit_contention_scale(live, lambda c: _replay(reqs, insts, c))
    assert not fit.at_bound
    assert fit.scale == pytest.approx(0.6, abs=0.08)
    assert len(fit.bias) == 2 + 8                      # the two bounds, then 8 bisections
    assert fit.bias_at(0.0) < 0 < fit.bias_at(1.5)     # too fast without, too slow at 1.5
    assert fit.bias_at(0.75) > 0                      # the first midpoint: above 0.6, slow
    d = fit.as_dict()
    assert d["scale"] == round(fit.scale, 4) and len(d["tpot_bias_by_scale"]) == 10


def test_the_fit_stops_at_a_bound_it_cannot_cross():
    reqs = _requests(80)
    # live engines 15 % faster than simulated: even no contention leaves the simulator slow
    live = _replay(reqs, _insts(0.85), 0.0)
    fit = fit_contention_scale(live, lambda c: _replay(reqs, _insts(), c), steps=3)
    assert fit.at_bound and fit.scale == 0.0 and len(fit.bias) == 2
    live = _replay(reqs, _insts(1.3), 1.0)     # 30 % slower: even 1.5 x is too fast
    fit = fit_contention_scale(live, lambda c: _replay(reqs, _insts(), c), steps=3)
    assert fit.at_bound and fit.scale == 1.5


def test_scaling_the_contention_keeps_the_spin_time():
    p = _insts()[0].predictor
    q = with_contention_scale(p, 0.5)
    for key in NEIGHBOUR_KEYS:
        assert getattr(q, key) == pytest.approx(getattr(p, key) * 0.5), key
    assert getattr(q, SPIN_KEY) == getattr(p, SPIN_KEY) > 0
    assert with_contention_scale(p, 0).neighbour_decode_slowdown_decode == 0


@pytest.mark.parametrize("scale", [-0.1, float("inf"), float("nan"), True, "1"])
def test_a_bad_scale_is_refused_by_name(scale):
    with pytest.raises(ValueError, match="contention scale"):
        with_contention_scale(_insts()[0].predictor, scale)


def test_bad_fit_arguments_are_refused():
    reqs = _requests(20)
    live = _replay(reqs, _insts(), 1.0)

    def sim(c):
        return _replay(reqs, _insts(), c)
    with pytest.raises(ValueError, match=r"range \[1.0, 1.0\]"):
        fit_contention_scale(live, sim, lo=1.0, hi=1.0)
    with pytest.raises(ValueError, match="steps=0"):
        fit_contention_scale(live, sim, steps=0)
    with pytest.raises(ValueError, match="no live training replay"):
        fit_contention_scale([], sim)
    nothing = [{k: np.full(20, np.nan) for k in live[0]}]   # every request failed live
    with pytest.raises(ValueError, match="no request completed on both sides"):
        fit_contention_scale(nothing, sim)
