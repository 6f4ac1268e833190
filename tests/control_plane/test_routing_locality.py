"""Prefix hashing, the prefix index and the locality (prefix-cache aware) router."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest

from control_plane.prefix import block_hashes
from control_plane.routing import create_router
from control_plane.routing.prefix_cache import PrefixCacheScorer
from control_plane.routing.prefix_index import PrefixIndex
from tests.builders import cluster, down, load, req

ROOT = Path(__file__).resolve().parents[2]


# -- block_hashes -------------------------------------------------------------------------
def test_only_full_blocks_are_hashed():
    assert len(block_hashes(list(range(35)), 16)) == 2
    assert block_hashes(list(range(15)), 16) == ()
    assert len(block_hashes(list(range(32)), 16)) == 2
    assert len(block_hashes(range(8), 4)) == 2  # any sequence


def test_hashes_are_prefix_chained():
    a = list(range(64))
    b = list(range(48)) + [7] * 16
    ha, hb = block_hashes(a), block_hashes(b)
    assert ha[:3] == hb[:3] and ha[3] != hb[3]
    c = [99, *a[1:]]  # first block differs: every hash differs
    assert not set(block_hashes(c)) & set(ha)
    d = a[16:32] + a[16:32]  # same block content at another position: another hash
    assert block_hashes(d)[1] != ha[1]


def test_parent_continues_a_chain():
    a, b = list(range(32)), list(range(100, 148))
    ha = block_hashes(a)
    assert block_hashes(a + b) == ha + block_hashes(b, parent=ha[-1])


def test_hashes_are_64_bit_ints_and_numpy_agrees():
    np = pytest.importorskip("numpy")
    toks = list(range(1000, 1100))
    hs = block_hashes(toks)
    assert all(isinstance(h, int) and -(2**63) <= h < 2**63 for h in hs)
    assert block_hashes(np.array(toks)) == hs
    assert block_hashes(tuple(toks)) == hs


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_bad_block_size(bad):
    with pytest.raises(ValueError, match="block_size"):
        block_hashes([1, 2, 3], bad)


@pytest.mark.parametrize("seed", ["0", "12345"])
def test_hashes_are_the_same_in_another_process(seed):
    code = ("from control_plane.prefix import block_hashes;"
            "print(block_hashes(list(range(5000, 5100)), 16))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True,
                         env={"PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT)})
    assert out.stdout.strip() == str(block_hashes(list(range(5000, 5100)), 16))


# -- PrefixIndex --------------------------------------------------------------------------
A = tuple(range(100, 108))  # a chain of 8 blocks
B = (*A[:3], 200, 201, 202)  # shares 3 blocks with A


def test_index_matches_leading_blocks_per_instance():
    idx = PrefixIndex()
    idx.insert("x", A, 100)
    idx.insert("y", B, 100)
    assert idx.match(A) == {"x": 8, "y": 3}
    assert idx.match(B) == {"x": 3, "y": 6}
    assert idx.match(A[:5]) == {"x": 5, "y": 3}
    assert idx.match((5, *A[1:])) == {}
    assert idx.match(()) == {}
    assert idx.distinct_blocks() == 11 and idx.size() == 14


def test_generations_evict_the_least_recent_and_bound_the_size():
    idx = PrefixIndex()
    idx.insert("x", A, 16)  # two generations of 8: young = A
    idx.insert("x", (1, 2, 3, 4), 16)  # 8 + 4 > 8: rotate, old = A, young = 1..4
    assert idx.match(A) == {"x": 8} and idx.match((1, 2, 3, 4)) == {"x": 4}
    assert idx.size("x") == 12
    idx.insert("x", A[:2], 16)  # touch A's head: young = 1..4 A0 A1
    idx.insert("x", (9, 8, 7), 16)  # rotate: old A2..A7 untouched -> dropped
    assert idx.match(A) == {"x": 2}  # what survives is still a prefix
    assert idx.match((1, 2, 3, 4)) == {"x": 4} and idx.match((9, 8, 7)) == {"x": 3}
    for k in range(50):
        idx.insert("x", tuple(range(10_000 + 1000 * k, 10_007 + 1000 * k)), 16)
        assert idx.size("x") <= 16
        assert idx.match(tuple(range(10_000 + 1000 * k, 10_007 + 1000 * k))) == {"x": 7}
    assert idx.distinct_blocks() <= 16
    assert idx.match(A) == {}


def test_long_chain_is_truncated_to_half_the_budget():
    idx = PrefixIndex()
    idx.insert("x", tuple(range(50)), 8)
    assert idx.size("x") == 4 and idx.match(tuple(range(50))) == {"x": 4}


def test_match_groups_longest_first():
    idx = PrefixIndex()
    idx.insert("x", A, 100)
    idx.insert("y", A[:5], 100)
    idx.insert("z", A[:5], 100)
    groups = idx.match_groups(A)
    assert [(m, sorted(ids)) for m, ids in groups] == [(8, ["x"]), (5, ["y", "z"])]
    assert [(m, sorted(ids)) for m, ids in idx.match_groups(A[:4])] == [(4, ["x", "y", "z"])]


def test_insert_hint_gives_the_same_index():
    chains = [prompt(512, 256, k % 5) for k in range(40)]
    plain, hinted = PrefixIndex(), PrefixIndex()
    for k, c in enumerate(chains):
        iid = f"i{k % 3}"
        groups = hinted.match_groups(c)
        held = next((m for m, ids in groups if iid in ids), 0)
        hinted.insert(iid, c, 60, (held, groups[0][0] if groups else 0))
        plain.insert(iid, c, 60)
        assert plain._holders == hinted._holders
    for iid in ("i0", "i1", "i2"):
        assert plain._gens[iid].young == hinted._gens[iid].young
        assert plain._gens[iid].old == hinted._gens[iid].old


def test_forget_and_shared_blocks():
    idx = PrefixIndex()
    idx.insert("x", A, 100)
    idx.insert("y", A, 100)
    idx.forget("x")
    assert idx.match(A) == {"y": 8}
    idx.forget("y")
    idx.forget("nobody")
    assert idx.distinct_blocks() == 0 and idx.size() == 0


def test_prefix_cache_scorer():
    st = cluster(3)
    scorer = PrefixCacheScorer(stride=4)
    view = st.view
    full = prompt(1024, 0, 0)  # 64 blocks
    scorer.on_dispatch(req("a", prefix=full), view["i1"], 0.0)
    scorer.on_dispatch(req("b", prefix=full[:16]), view["i2"], 0.0)
    assert scorer.score(req("c", prefix=full), view.candidates, view) == [0.0, 1.0, 0.25]
    assert scorer.score(req("d", prefix=full[:3]), view.candidates, view) == [0.0] * 3
    assert scorer.score(req("e"), (view["i2"], view["i1"]), view) == [0.0, 0.0]
    assert scorer.score(req("f", prefix=full), (view["i2"], view["i1"]), view) == [0.25, 1.0]


def test_scorer_budget_from_kv_capacity():
    st = cluster(1, kv_capacity_tokens=160 * 16)  # 160 blocks: 20 entries of 8 blocks
    assert PrefixCacheScorer(block_size=16).budget(st["i0"]) == 20
    assert PrefixCacheScorer(block_size=16, stride=1).budget(st["i0"]) == 160
    assert PrefixCacheScorer(max_blocks=24).budget(st["i0"]) == 3
    assert PrefixCacheScorer(max_blocks=2).budget(st["i0"]) == 1
    assert PrefixCacheScorer().budget(cluster(1)["i0"]) == 12_500


def test_index_is_tolerant_of_hashes_that_are_not_chains():
    idx = PrefixIndex()
    idx.insert("x", (1, 2, 3), 4)
    idx.insert("y", (9, 2, 3, 7), 4)  # 2 and 3 repeated at other positions
    idx.insert("x", (5, 6, 8, 10), 4)  # evicts x's old blocks
    idx.forget("y")
    idx.forget("x")
    assert idx.distinct_blocks() == 0


# -- locality router ----------------------------------------------------------------------
def prompt(shared: int, own: int, seed: int) -> tuple[int, ...]:
    gen = random.Random(seed)
    return block_hashes([7] * shared + [gen.randrange(50_000) for _ in range(own)])


def dispatch(router, st, rq, seed=0, keep=False):
    view = st.view
    iid = router.route(rq, view.candidates, view, random.Random(seed))
    v = view[iid]
    st.dispatched(v, rq)
    router.on_dispatch(rq, v, 0.0)
    if not keep:
        st.released(v, rq)
        router.on_finish(rq, v, None, 0.0)
    return iid


def test_shared_prefix_goes_to_the_same_instance():
    st = cluster(8)
    r = create_router("locality")
    first = dispatch(r, st, req("a", prefix=prompt(1024, 256, 1)))
    for k in range(10):
        assert dispatch(r, st, req(f"b{k}", prefix=prompt(1024, 256, 2 + k)), seed=k) == first


def test_without_shared_prefix_the_least_utilised_wins():
    st = cluster(3)
    load(st, "i0", req("x"))
    load(st, "i2", req("y"))
    r = create_router("locality")
    assert dispatch(r, st, req("a", prefix=prompt(0, 320, 1))) == "i1"
    assert dispatch(r, st, req("b")) == "i1"  # no prefix hashes at all


def test_imbalance_guard_bypasses_an_overloaded_holder():
    st = cluster(4)
    r = create_router("locality")
    holder = dispatch(r, st, req("a", prefix=prompt(2048, 0, 0)))
    load(st, holder, *[req(f"h{k}") for k in range(20)])  # 20 - 0 > 8 and 20 > 1.5 x 0
    assert dispatch(r, st, req("b", prefix=prompt(2048, 0, 0))) != holder
    lax = create_router({"type": "locality", "params": {"balance_abs_threshold": 1000}})
    st2 = cluster(4)
    holder2 = dispatch(lax, st2, req("a", prefix=prompt(2048, 0, 0)))
    load(st2, holder2, *[req(f"h{k}") for k in range(20)])
    assert dispatch(lax, st2, req("b", prefix=prompt(2048, 0, 0))) == holder2


def test_index_is_bounded_and_forgets_down_instances():
    st = cluster(2)
    r = create_router({"type": "locality", "params": {"max_blocks": 64, "stride": 4}})
    scorer = r.filters[0]
    for k in range(30):
        dispatch(r, st, req(f"r{k}", prefix=prompt(0, 1024, k)))  # 64 blocks, 16 entries
        assert all(scorer.index.size(i) <= 16 for i in ("i0", "i1"))
    holder = dispatch(r, st, req("z", prefix=prompt(0, 1024, 99)))
    assert dispatch(r, st, req("z1", prefix=prompt(0, 1024, 99))) == holder
    down(st, holder)
    other = "i1" if holder == "i0" else "i0"
    assert dispatch(r, st, req("z2", prefix=prompt(0, 1024, 99))) == other
    assert scorer.index.instances() == [other]


def test_load_weight_trades_hits_against_utilisation():
    def run(holder_load):
        st = cluster(2, max_inflight=8)
        r = create_router("locality")  # load_weight 0.5
        first = dispatch(r, st, req("a", prefix=prompt(512, 1536, 0)))  # 128 blocks
        load(st, first, *[req(f"h{k}") for k in range(holder_load)])
        # 32 of 128 blocks match: 0.25 + 0.5 * (1 - load / 8) against 0.5 for the idle one
        return dispatch(r, st, req("b", prefix=prompt(512, 1536, 1))) == first

    assert run(3)  # 0.25 + 0.3125 > 0.5
    assert run(4)  # 0.25 + 0.25 == 0.5: the hit wins the tie
    assert not run(5)  # 0.25 + 0.1875 < 0.5


def test_mixed_limits_compare_utilisation():
    from control_plane.cluster import ClusterState
    from control_plane.types import InstanceSpec
    st = ClusterState([InstanceSpec("big", max_inflight=40), InstanceSpec("small",
                                                                          max_inflight=4)])
    load(st, "big", *[req(f"b{k}") for k in range(6)])  # 15 % used
    load(st, "small", req("s0"))  # 25 % used
    r = create_router({"type": "locality", "params": {"balance_abs_threshold": 100}})
    assert dispatch(r, st, req("x", prefix=prompt(0, 512, 3))) == "big"


@pytest.mark.parametrize("seed", range(6))
def test_locality_filter_keeps_the_best_of_the_equivalent_pipeline(seed):
    """The fused filter picks among the maxima of guard -> prefix_cache:1 + inflight:w."""
    gen = random.Random(seed)
    st = cluster(6, max_inflight=16)
    r = create_router({"type": "locality", "params": {"stride": 4}})
    pipe = create_router({"type": "pipeline", "params": {
        "filters": ["load_balance_guard"],
        "scorers": [{"type": "prefix_cache", "params": {"stride": 4}, "weight": 1.0},
                    ["inflight", 0.5]]}})
    view = st.view
    for k in range(40):
        rq = req(f"r{k}", prefix=prompt(256 * gen.randrange(5), 256, k))
        kept = r.filters[0].filter(rq, view.candidates, view)
        guarded = pipe.filters[0].filter(rq, view.candidates, view)
        total = [0.0] * len(guarded)
        for scorer, w in pipe.scorers:
            total = [t + w * x for t, x in zip(total, scorer.score(rq, guarded, view),
                                               strict=True)]
        best = {v.instance_id for v, t in zip(guarded, total, strict=True)
                if t >= max(total) - 1e-12}
        assert kept and {v.instance_id for v in kept} <= best
        iid = kept[gen.randrange(len(kept))].instance_id
        v = view[iid]
        st.dispatched(v, rq)
        r.on_dispatch(rq, v, 0.0)
        pipe.on_dispatch(rq, v, 0.0)
        if gen.random() < 0.5:
            st.released(v, rq)
