"""Engines sharing a host: the contended iteration time, and re-timing a plan in progress."""

from __future__ import annotations

import pytest

from control_plane.engine import Engine, EngineConfig, SharedHostPredictor
from control_plane.perf.base import Batch
from control_plane.perf.profile import FittedPredictor
from control_plane.types import Request

BASE = FittedPredictor(0.010, 4e-4, 1e-7, 6e-4, 3e-6, request_ttft_overhead_s=0.011)
# decode by decode, decode by prefill, prefill by decode, prefill by prefill
SLOW = (0.2, 0.3, 0.05, 0.25)


def test_contended_time_slows_each_part_by_what_the_neighbours_do():
    p = SharedHostPredictor(BASE, SLOW)
    dec = Batch(decode_seqs=4, decode_context=600)
    pre = Batch(prefill_tokens=512, prefill_attention=512 * 512)
    mixed = Batch(512, 512 * 512, 4, 600)
    for b in (dec, pre, mixed):
        assert p.iteration_s(b) == BASE.iteration_s(b)        # no neighbour busy
    assert p.decode_run_s(4, 600, 10) == BASE.decode_run_s(4, 600, 10)
    p.set_neighbours(decoding=1, prefilling=0)
    assert p.iteration_s(dec) == pytest.approx(1.2 * BASE.iteration_s(dec))
    assert p.iteration_s(pre) == pytest.approx(1.05 * BASE.iteration_s(pre))
    d = BASE.iteration_s(dec)
    assert p.iteration_s(mixed) == pytest.approx(1.2 * d + 1.05 * (BASE.iteration_s(mixed) - d))
    assert p.decode_run_s(4, 600, 10) == pytest.approx(1.2 * BASE.decode_run_s(4, 600, 10))
    p.set_neighbours(decoding=1, prefilling=1)     # linear in the neighbours
    assert p.iteration_s(dec) == pytest.approx(1.5 * BASE.iteration_s(dec))
    assert p.iteration_s(pre) == pytest.approx(1.3 * BASE.iteration_s(pre))
    # the base predictor's other attributes show through
    assert p.request_ttft_overhead_s == 0.011 and p.intercept_s == 0.010


@pytest.mark.parametrize("bad", [(0.1, 0.2, 0.3), (-0.1, 0, 0, 0), (0, float("nan"), 0, 0),
                                 (0, 0, True, 0), (0, 0, 0, "0.1")])
def test_contended_predictor_rejects_bad_slowdowns(bad):
    with pytest.raises(ValueError, match="SharedHostPredictor"):
        SharedHostPredictor(BASE, bad)


def _finishes(fast_forward: bool, change_at: float | None) -> dict[str, float]:
    """Run four decoding requests on one engine; at ``change_at`` a neighbour starts
    decoding (retime, then the new speed)."""
    pred = SharedHostPredictor(BASE, SLOW)
    eng = Engine(EngineConfig(num_gpu_blocks=512, block_size=16), pred,
                 fast_forward=fast_forward)
    for k in range(4):
        eng.add(Request(f"r{k}", 0.0, 100 + 10 * k, output_tokens=60 + 20 * k,
                        max_tokens=60 + 20 * k), 0.0)
    done: dict[str, float] = {}
    now, changed = 0.0, change_at is None
    end = eng.start(now)
    while end is not None:
        if not changed and end > change_at:
            eng.retime(change_at)
            pred.set_neighbours(1, 0)
            changed = True
            end = eng.plan_end_s
        out = eng.complete(end)
        done.update({rid: t for rid, t, *_ in out.finished})
        now = end
        end = eng.start(now)
    return done


def test_retime_keeps_fast_forward_equal_to_step_by_step():
    # a speed change in the middle of a decode run: the run ends with the iteration in
    # progress, the rest is timed at the new speed, exactly as one iteration at a time
    for at in (0.35, 0.8, 1.234):
        ff, step = _finishes(True, at), _finishes(False, at)
        assert ff == pytest.approx(step, rel=1e-12, abs=1e-12)
        assert ff != _finishes(True, None)
    # later changes slow fewer iterations down
    early, late = _finishes(True, 0.35), _finishes(True, 1.234)
    assert all(early[r] > late[r] for r in early)


def test_host_counts_and_respeed():
    from control_plane.engine.contention import (
        DECODING,
        IDLE,
        PREFILLING,
        SPINNING,
        host_counts,
    )
    assert host_counts([DECODING, IDLE, PREFILLING, DECODING, SPINNING]) == (2, 1, 1)
    assert host_counts([]) == (0, 0, 0)
    p = SharedHostPredictor(BASE, SLOW)
    eng = Engine(EngineConfig(max_num_seqs=4), p)
    eng.add(Request("a", 0.0, 64, output_tokens=50, max_tokens=50), 0.0)
    eng.step(0.0)                       # prefilled; now a run of decodes
    t0 = 1.0
    end = eng.start(t0)                 # a run of 49 decode iterations (fast-forwarded)
    assert eng.busy and end is not None and end > t0 + 0.1
    assert not p.respeed(eng, (0, 0, 0), t0 + 1e-4)   # nothing changed: nothing done
    assert eng.plan_end_s == end
    assert p.respeed(eng, (1, 0, 0), t0 + 1e-4)       # a neighbour decodes from now
    assert (p.decoding, p.prefilling, p.spinning) == (1, 0, 0)
    # the run ends with the iteration in progress (the first of 49)
    assert t0 < eng.plan_end_s < t0 + (end - t0) / 10
