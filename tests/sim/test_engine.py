"""The engine model on tiny scenarios with hand-computed timelines.

Predictor: 10 ms per iteration + 1 ms per token (prefill tokens + decoding sequences), so
a 100-token prefill takes 0.110 s and a decode iteration of n sequences 0.010 + 0.001 n.
Blocks hold 16 tokens.
"""

from __future__ import annotations

import pytest

from control_plane.perf.base import Batch, LinearPredictor
from control_plane.prefix import block_hashes
from sim import Engine, EngineConfig
from tests.builders import req
from tests.sim.engine_replay import replay

P = LinearPredictor(overhead_s=0.01, per_token_s=0.001)
approx = pytest.approx


def run(cfg: EngineConfig, *requests, predictor=P, fast_forward: bool = True) -> dict:
    both = [replay(Engine(cfg, predictor, fast_forward=ff), requests)
            for ff in (fast_forward, not fast_forward)]
    assert both[0] == both[1]  # fast-forward never changes a result
    return both[0]


def test_prefill_then_decode_steps():
    out = run(EngineConfig(num_gpu_blocks=100), req("a", 0.0, prompt=100, output=3))
    assert out["a"]["first"] == approx(0.110)  # prefill: 10 ms + 100 x 1 ms
    assert out["a"]["finish"] == approx(0.110 + 2 * 0.011)  # two decode iterations
    assert out["a"]["output"] == 3


def test_chunked_prefill_over_two_steps():
    pred = LinearPredictor(overhead_s=0.01, per_token_s=0.001, per_attention_s=1e-6)
    eng = Engine(EngineConfig(max_num_batched_tokens=64), pred)
    eng.add(req("a", 0.0, prompt=100, output=2), 0.0)
    s1 = eng.step(0.0)
    assert eng.last_batch == Batch(64, 64 * 64, 0, 0) and not s1.first_tokens
    assert s1.end_s == approx(0.01 + 0.064 + 0.004096)
    s2 = eng.step(s1.end_s)  # the last 36 tokens attend over all 100
    assert eng.last_batch == Batch(36, 36 * 100, 0, 0)
    assert s2.first_tokens == [("a", s2.end_s)]
    assert s2.end_s == approx(s1.end_s + 0.01 + 0.036 + 0.0036)
    s3 = eng.step(s2.end_s)
    assert s3.finished == [("a", s3.end_s, 2, 0, 0)]
    assert s3.end_s == approx(s2.end_s + 0.011)


def test_without_chunked_prefill_a_prompt_waits_for_a_budget_that_fits():
    cfg = EngineConfig(enable_chunked_prefill=False, max_num_batched_tokens=64)
    out = run(cfg, req("a", 0.0, prompt=50, output=3), req("b", 0.0, prompt=50, output=3))
    assert out["a"]["first"] == approx(0.060)  # b does not fit the 14 tokens left
    assert out["b"]["first"] == approx(0.060 + 0.061)  # a's decode + b's prefill
    assert out["a"]["finish"] == approx(0.121 + 0.012)
    assert out["b"]["finish"] == approx(0.133 + 0.011)
    chunked = run(EngineConfig(max_num_batched_tokens=64), req("a", 0.0, prompt=50, output=3),
                  req("b", 0.0, prompt=50, output=3))
    assert chunked["b"]["first"] == approx(0.074 + 0.047)  # 14-token chunk, then 36 + 1


@pytest.mark.parametrize(("max_seqs", "times"), [
    (1, {"a": (0.020, 0.031), "b": (0.051, 0.062)}),  # one at a time
    (2, {"a": (0.030, 0.042), "b": (0.030, 0.042)}),  # batched together
])
def test_max_num_seqs_limits_concurrency(max_seqs, times):
    out = run(EngineConfig(max_num_seqs=max_seqs), req("a", 0.0, prompt=10, output=2),
              req("b", 0.0, prompt=10, output=2))
    for rid, (first, finish) in times.items():
        assert (out[rid]["first"], out[rid]["finish"]) == (approx(first), approx(finish))


def test_request_arriving_mid_iteration_joins_the_next():
    out = run(EngineConfig(), req("a", 0.0, prompt=100, output=5),
              req("b", 0.05, prompt=10, output=2))
    assert out["b"]["first"] == approx(0.110 + 0.021)  # a's decode + b's 10 tokens
    assert out["b"]["finish"] == approx(0.131 + 0.012)
    assert out["a"]["finish"] == approx(0.143 + 2 * 0.011)


def test_arrival_exactly_at_an_iteration_start_joins_the_one_after():
    first = run(EngineConfig(), req("a", 0.0, prompt=100, output=4))["a"]["first"]
    out = run(EngineConfig(), req("a", 0.0, prompt=100, output=4),
              req("b", first, prompt=10, output=1))
    assert out["b"]["first"] == approx(first + 0.011 + 0.021)


def test_preemption_by_recompute_when_kv_runs_out():
    # 5 blocks of 16: two 32-token prompts take 4; both need a 5th block for their 33rd
    # token: a gets it, b (the last running) is preempted, and can only come back when a
    # finishes. It keeps one of its two full blocks (a's last block evicted the other) and
    # recomputes the rest: 33 tokens - 16 cached = 17.
    out = run(EngineConfig(num_gpu_blocks=5), req("a", 0.0, prompt=32, output=20),
              req("b", 0.0, prompt=32, output=20))
    assert out["a"]["first"] == out["b"]["first"] == approx(0.074)
    assert out["a"]["finish"] == approx(0.085 + 18 * 0.011)
    assert out["a"]["preemptions"] == 0
    assert out["b"]["preemptions"] == 1 and out["b"]["cached"] == 0
    assert out["b"]["finish"] == approx(0.283 + 0.027 + 18 * 0.011)


def test_priority_policy_preempts_the_least_important_running_request():
    # l (priority 4) runs; h (priority 0) joins. When h needs a block and none is free, the
    # fcfs engine preempts the last running request (h itself), the priority engine l.
    reqs = (req("l", 0.0, prompt=32, output=20, priority=4),
            req("h", 0.01, prompt=32, output=20, priority=0))
    fcfs = run(EngineConfig(num_gpu_blocks=5), *reqs)
    assert (fcfs["l"]["preemptions"], fcfs["h"]["preemptions"]) == (0, 1)
    assert fcfs["l"]["finish"] == approx(0.096 + 17 * 0.011)
    prio = run(EngineConfig(num_gpu_blocks=5, scheduling_policy="priority"), *reqs)
    assert (prio["l"]["preemptions"], prio["h"]["preemptions"]) == (1, 0)
    assert prio["h"]["first"] == approx(0.042 + 0.043)
    assert prio["h"]["finish"] == approx(0.096 + 18 * 0.011)
    assert prio["l"]["finish"] == approx(0.294 + 0.028 + 17 * 0.011)


@pytest.mark.parametrize(("policy", "order"), [("fcfs", "bc"), ("priority", "cb")])
def test_engine_waiting_order(policy, order):
    out = run(EngineConfig(max_num_seqs=1, scheduling_policy=policy),
              req("a", 0.0, prompt=10, output=2), req("b", 0.005, prompt=10, output=2,
                                                       priority=4),
              req("c", 0.006, prompt=10, output=2, priority=0))
    assert out[order[0]]["finish"] == approx(0.062)
    assert out[order[1]]["finish"] == approx(0.093)


def test_prefix_cache_hit_skips_exactly_the_shared_full_blocks():
    system = list(range(50))  # 3 full blocks + 2 tokens
    a = req("a", 0.0, prompt=50, output=2, prefix=block_hashes(system, 16))
    b_tokens = system + [7] * 20  # 70 tokens, 4 full blocks: the first 3 shared
    b = req("b", 1.0, prompt=70, output=2, prefix=block_hashes(b_tokens, 16))
    out = run(EngineConfig(), a, b)
    assert out["b"]["cached"] == 48
    assert out["b"]["first"] == approx(1.0 + 0.010 + 0.001 * (70 - 48))
    cold = run(EngineConfig(enable_prefix_caching=False), a, b)
    assert cold["b"]["cached"] == 0
    assert cold["b"]["first"] == approx(1.0 + 0.010 + 0.070)


def test_full_prompt_hit_still_computes_its_last_block():
    a = req("a", 0.0, prompt=64, output=1, prefix=(1, 2, 3, 4))
    b = req("b", 1.0, prompt=64, output=1, prefix=(1, 2, 3, 4))
    out = run(EngineConfig(), a, b)
    assert out["b"]["cached"] == 48  # at most num_tokens - 1 tokens come from the cache
    assert out["b"]["first"] == approx(1.0 + 0.010 + 0.016)


def test_coarser_hash_blocks_map_onto_engine_blocks():
    # one hash per 32 tokens (two engine blocks): a shared first hash covers 2 blocks
    a = req("a", 0.0, prompt=64, output=1, prefix=(11, 12))
    b = req("b", 1.0, prompt=64, output=1, prefix=(11, 99))
    out = run(EngineConfig(hash_block_size=32), a, b)
    assert out["b"]["cached"] == 32


def test_lru_keeps_the_recent_prefix_and_evicts_the_old_one():
    # 8 blocks. a, then b cache 4 blocks each; c needs 4 and evicts the least recently
    # freed (a's), so afterwards e = b's prompt hits and d = a's prompt misses.
    cfg = EngineConfig(num_gpu_blocks=8)
    a = req("a", 0.0, prompt=64, output=1, prefix=(1, 2, 3, 4))
    b = req("b", 1.0, prompt=64, output=1, prefix=(5, 6, 7, 8))
    c = req("c", 2.0, prompt=64, output=1)
    e = req("e", 3.0, prompt=64, output=1, prefix=(5, 6, 7, 8))
    d = req("d", 4.0, prompt=64, output=1, prefix=(1, 2, 3, 4))
    out = run(cfg, a, b, c, d, e)
    assert out["e"]["cached"] == 48 and out["d"]["cached"] == 0


def test_stats_abort_and_fits():
    eng = Engine(EngineConfig(num_gpu_blocks=10, max_num_seqs=1), P)
    assert not eng.fits(req("big", prompt=150, output=20))  # 169 tokens > 160
    assert eng.fits(req("ok", prompt=150, output=11))
    eng.add(req("a", 0.0, prompt=40, output=50), 0.0)
    eng.add(req("b", 0.0, prompt=40, output=5), 0.0)
    eng.step(0.0)
    st = eng.stats()
    assert (st.running, st.waiting, st.kv_usage) == (1, 1, 0.3)
    assert eng.abort("b", eng.plan_end_s or 0.1) and not eng.abort("b", 0.1)
    assert eng.stats().waiting == 0
    end = eng.start(0.05)
    assert eng.abort("a", end - 1e-9)
    out = eng.complete(end)
    assert out.finished == [] and not eng.has_work() and eng.pool.used == 0
    eng.check()


def test_decode_run_cut_by_an_arrival_keeps_kv_state_exact():
    eng = Engine(EngineConfig(), P)
    eng.add(req("a", 0.0, prompt=16, output=100), 0.0)
    eng.step(0.0)  # prefill: 1 block
    end = eng.start(0.026)
    assert end == approx(0.026 + 99 * 0.011)  # one planned run to the finish
    assert eng.stats(0.026 + 5 * 0.011 + 0.001).kv_usage == 2 / 16384  # 6 started
    eng.add(req("b", 0.1, prompt=10, output=1), 0.1)
    assert eng.plan_end_s == approx(0.026 + 7 * 0.011)  # cut after the 7th iteration
    eng.complete(eng.plan_end_s)
    eng.check()


def test_bad_engine_config():
    with pytest.raises(ValueError, match="scheduling_policy='sjf'"):
        EngineConfig(scheduling_policy="sjf")
    with pytest.raises(ValueError, match="num_gpu_blocks=0"):
        EngineConfig(num_gpu_blocks=0)
    with pytest.raises(ValueError, match="hash_block_size=0"):
        EngineConfig(hash_block_size=0)
