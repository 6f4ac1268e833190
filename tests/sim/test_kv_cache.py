"""BlockPool: accounting, LRU eviction order, prefix hits, own segments; engine stress."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from control_plane.engine.kv_cache import KEYED, OWN, PLAIN
from control_plane.perf.base import LinearPredictor
from sim import BlockPool, Engine, EngineConfig, KVOverAllocation
from tests.builders import req
from tests.sim.engine_replay import replay


def queue(pool: BlockPool) -> list:
    """The free queue block by block: 'P' plain, 'O' own, else the key."""
    out = []
    for c, kind, ref in pool._fq:
        out += {PLAIN: ["P"] * c, OWN: ["O"] * c, KEYED: [ref] * c}[kind]
    return out


def test_allocate_release_and_over_allocation():
    pool = BlockPool(10, 16)
    pool.allocate(7)
    assert (pool.free, pool.used) == (3, 7)
    with pytest.raises(KVOverAllocation, match="asked for 4 KV blocks, 3 free of 10"):
        pool.allocate(4)
    pool.release((), 0, 0, 7)
    assert pool.free == 10 and queue(pool) == ["P"] * 10
    assert len(pool._fq) == 1  # adjacent plain runs merge
    pool.check(held=0)


def test_release_is_reverse_order_and_eviction_is_lru():
    pool = BlockPool(6, 4)
    pool.allocate(6)
    for k in (10, 11, 12):
        assert pool.register(k)
    # a request holding keyed blocks 10, 11, 12 then 3 more: 1 full own + 2 plain
    pool.release((10, 11, 12), 3, 0, 3)
    assert queue(pool) == ["P", "P", "P", 12, 11, 10]
    assert pool.lookup((10, 11, 12), 3, 3) == (3, 3)
    pool.allocate(4)  # the plain blocks, then the oldest cached one: the request's last
    assert queue(pool) == [11, 10]
    assert pool.lookup((10, 11, 12), 3, 3) == (2, 2)  # the cached prefix survives
    assert pool.lookup((10, 11, 12), 3, 1) == (1, 1)  # capped
    assert pool.evicted_blocks == 1
    pool.check(held=4)


def test_hit_on_free_cached_block_leaves_the_queue():
    pool = BlockPool(4, 4)
    pool.allocate(2)
    pool.register(1)
    pool.register(2)
    pool.release((1, 2), 2, 0, 0)
    assert pool.free == 4
    pool.touch((1, 2), 2)  # a new request hits both
    assert pool.free == 2 and queue(pool) == ["P", "P"]
    pool.allocate(2)
    assert pool.cached_keys == 2  # the hit blocks were not evicted
    pool.check(held=4)
    assert not pool.register(1)  # already cached: a duplicate is not indexed


def test_own_segment_is_evicted_from_its_tail_and_taken_back():
    pool = BlockPool(8, 4)
    pool.allocate(8)
    owner = object()
    seg = pool.release((), 0, 5, 1, owner)  # preempted: 5 full own blocks + 1 partial
    assert queue(pool) == ["P", "O", "O", "O", "O", "O"]
    pool.allocate(3)  # the partial block, then the owner's last 2 blocks
    assert seg[0] == 3 and pool.evicted_blocks == 2
    pool.take_own(seg, 2)  # resumed with 2 of its first 3 blocks (a cap)
    assert seg[1] == PLAIN and queue(pool) == ["P"]
    pool.check(held=7)


@settings(max_examples=30, deadline=None, derandomize=True)
@given(seed=st.integers(0, 10_000), blocks=st.integers(12, 80),
       policy=st.sampled_from(["fcfs", "priority"]), chunked=st.booleans(),
       caching=st.booleans(), threshold=st.sampled_from([0, 24]))
def test_kv_never_over_allocated_under_stress(seed, blocks, policy, chunked, caching,
                                              threshold):
    import random
    rng = random.Random(seed)
    cfg = EngineConfig(num_gpu_blocks=blocks, block_size=8, max_num_seqs=rng.randint(2, 20),
                       max_num_batched_tokens=rng.choice([32, 64, 300]) if chunked else 300,
                       enable_chunked_prefill=chunked, enable_prefix_caching=caching,
                       scheduling_policy=policy, long_prefill_token_threshold=threshold)
    limit = min(blocks * 8, 10**9 if chunked else 300)
    reqs, t = [], 0.0
    for i in range(40):
        t += rng.expovariate(30.0)
        p = rng.randint(1, min(120, limit - 1))
        o = rng.randint(1, min(60, limit - p))
        g = rng.randrange(3)
        prefix = tuple(hash((g, j)) for j in range(min(p // 8, rng.randint(0, 6))))
        reqs.append(req(f"r{i}", t, p, o, priority=rng.randrange(5), prefix=prefix))
    eng = Engine(cfg, LinearPredictor(0.005, 0.0002, 1e-6))
    peak = []

    class Checked(BlockPool):
        __slots__ = ()

        def allocate(self, n):
            super().allocate(n)
            peak.append(self.used)
            assert self.used <= blocks

    eng.pool = Checked(blocks, 8, caching)
    out = replay(eng, reqs)  # checks accounting after every iteration
    assert sorted(out) == sorted(r.request_id for r in reqs)
    assert all(v["output"] == r.output_tokens for r, v in
               zip(sorted(reqs, key=lambda r: r.request_id),
                   [out[k] for k in sorted(out)], strict=True))
    assert eng.pool.used == 0 and max(peak) <= blocks
