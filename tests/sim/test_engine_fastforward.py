"""Fast-forward and the engine's shortcuts never change a result.

Three independent checks on randomized scenarios (arrivals in the middle of decode runs,
preemptions, prefix hits, priorities, small budgets, chunked prefill on and off):

1. fast-forward vs step-by-step: identical per-request first-token and finish times (bit
   for bit: consecutive identical decode iterations are timed from a common anchor in both
   modes), on one engine and through the whole SimPy driver (scrapes, network delays,
   failures);
2. the engine's fast paths vs its request-by-request path (``_exact=True``): identical;
3. the engine vs a literal reference (explicit block ids, per-block LRU queue, a loop over
   every request each iteration, ``iteration_s`` for every iteration): equal to 1e-9.
"""

from __future__ import annotations

import math
import random

import pytest

from control_plane import InstanceSpec
from control_plane.perf.base import LinearPredictor
from sim import Engine, EngineConfig, InstanceSim, SimConfig, simulate
from tests.builders import req
from tests.sim.engine_replay import replay
from tests.sim.ref_engine import ref_run

P = LinearPredictor(overhead_s=0.005, per_token_s=0.0001, per_context_s=1e-6,
                    per_attention_s=1e-8)


def scenario(seed: int):
    """A random engine config and a workload that fits it."""
    rng = random.Random(seed)
    bs = rng.choice([4, 8, 16])
    chunked = rng.random() < 0.8
    cfg = EngineConfig(
        num_gpu_blocks=rng.randint(30, 200), block_size=bs, max_num_seqs=rng.randint(1, 40),
        max_num_batched_tokens=rng.randint(16, 600), enable_chunked_prefill=chunked,
        enable_prefix_caching=rng.random() < 0.8,
        scheduling_policy=rng.choice(["fcfs", "priority"]),
        long_prefill_token_threshold=rng.choice([0, 0, 32, 100]),
        hash_block_size=rng.choice([bs, 16, 2 * bs]))
    limit = min(cfg.num_gpu_blocks * bs, 10**9 if chunked else cfg.max_num_batched_tokens)
    hashed = rng.random() < 0.6
    rate = rng.uniform(5, 80)
    reqs, t = [], 0.0
    for i in range(rng.randint(5, 60)):
        t += rng.expovariate(rate)
        p = int(min(limit - 1, max(1, rng.lognormvariate(math.log(200), 0.9))))
        o = int(min(limit - p, max(1, rng.lognormvariate(math.log(40), 0.9))))
        prefix = ()
        if hashed:
            g, shared = rng.randrange(4), rng.randrange(20)
            n = p // 16 + rng.randrange(2)
            prefix = tuple(hash((g, j)) if j < shared else hash((i, j, 7)) for j in range(n))
        reqs.append(req(f"r{i}", t, p, o, priority=rng.randrange(5), prefix=prefix))
    return cfg, reqs


@pytest.mark.parametrize("seed", range(40))
def test_fast_forward_equals_step_by_step_and_the_exact_path(seed):
    cfg, reqs = scenario(seed)
    base = replay(Engine(cfg, P, fast_forward=False, _exact=True), reqs)
    for ff, exact in ((True, True), (False, False), (True, False)):
        assert replay(Engine(cfg, P, fast_forward=ff, _exact=exact), reqs) == base


@pytest.mark.parametrize("seed", range(40, 80))
def test_engine_matches_the_literal_reference(seed):
    cfg, reqs = scenario(seed)
    ref = ref_run(cfg, P, reqs)
    got = replay(Engine(cfg, P), reqs)
    assert set(got) == set(ref) == {r.request_id for r in reqs}
    for rid, want in ref.items():
        have = got[rid]
        assert math.isclose(have["first"], want["first"], rel_tol=1e-9), rid
        assert math.isclose(have["finish"], want["finish"], rel_tol=1e-9), rid
        assert (have["cached"], have["preemptions"]) == (want["cached"],
                                                         want["preemptions"]), rid


def test_fast_forward_skips_iterations():
    cfg = EngineConfig(num_gpu_blocks=2000)
    reqs = [req(f"r{i}", 0.3 * i, 300, 200) for i in range(20)]
    plans = []
    for ff in (True, False):
        eng = Engine(cfg, P, fast_forward=ff)
        n = 0
        orig = eng.complete

        def counting(now, orig=orig):
            nonlocal n
            n += 1
            return orig(now)

        eng.complete = counting
        replay(eng, reqs)
        plans.append((n, eng.steps))
    (ff_plans, ff_steps), (step_plans, steps) = plans
    assert ff_steps == steps == step_plans  # same iterations ...
    assert ff_plans < steps / 5  # ... in far fewer planned stretches


@pytest.mark.parametrize("seed", range(6))
def test_driver_fast_forward_equals_step_by_step(seed):
    rng = random.Random(seed)
    cfg, reqs = scenario(100 + seed)
    sims = [InstanceSim(InstanceSpec(f"i{k}", max_inflight=rng.choice([4, 64])), cfg, P)
            for k in range(3)]
    failures = [("i1", reqs[len(reqs) // 3].arrival_s, reqs[2 * len(reqs) // 3].arrival_s)]
    delay = rng.choice([0.0, 0.002])
    runs = []
    for ff in (True, False):
        conf = SimConfig(fast_forward=ff, network_delay_s=delay, scrape_interval_s=0.05)
        res = simulate(reqs, sims, router="least_loaded", config=conf, failures=failures)
        runs.append(([r.to_dict() for r in res.records],
                     {k: (s.time_s.tolist(), s.running.tolist(), s.waiting.tolist(),
                          s.kv_usage.tolist()) for k, s in res.series.items()}))
    assert runs[0] == runs[1]
