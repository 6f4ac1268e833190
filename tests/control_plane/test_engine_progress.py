"""What the engine model tells a real-time driver (the emulated engine): each request's
output so far, iteration by iteration, and when it was first admitted."""

from __future__ import annotations

import pytest

from control_plane.engine import Engine, EngineConfig
from control_plane.perf.base import LinearPredictor
from tests.builders import req


def test_output_tokens_follow_the_iterations_through_preemptions():
    eng = Engine(EngineConfig(max_num_seqs=4, num_gpu_blocks=12, block_size=4,
                              max_num_batched_tokens=32), LinearPredictor(),
                 fast_forward=False, track_admissions=True)
    reqs = [req(f"r{k}", 0.0, prompt=10 + 3 * k, output=12) for k in range(4)]
    for r in reqs:
        eng.add(r, 0.0)
    seen = dict.fromkeys((r.request_id for r in reqs), 0)
    finished: dict[str, int] = {}
    t = 0.0
    while eng.has_work():
        out = eng.step(t)
        t = out.end_s
        for rid, _, n, _, _ in out.finished:
            finished[rid] = n
        for rid in seen:
            n = eng.output_tokens(rid)
            if n is None:
                assert rid in finished
                continue
            assert seen[rid] <= n <= seen[rid] + 1  # one token per iteration at most
            seen[rid] = n
    assert finished == dict.fromkeys(seen, 12)
    assert eng.preemptions > 0  # the KV pool is too small for all four at once
    assert sorted(rid for rid, _ in eng.admissions) == sorted(seen)  # first admission only
    assert eng.output_tokens("unknown") is None
    eng.add(req("x", t, 5, 3), t)
    eng.start(t)
    with pytest.raises(RuntimeError, match="in progress"):
        eng.output_tokens("x")


def test_admissions_are_not_kept_unless_asked():
    eng = Engine(EngineConfig(), LinearPredictor())
    eng.add(req("a"), 0.0)
    eng.step(0.0)
    assert eng.admissions is None
