"""The named routers: registry, safety (only candidates), exact sequences, hand-made picks."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest

from control_plane.cluster import ClusterState
from control_plane.errors import ConfigError
from control_plane.routing import ROUTERS, create_router
from control_plane.routing.base import PipelineRouter
from control_plane.types import Health, InstanceSpec
from tests.builders import cluster, down, load, observe, req

ALL = [n for n in ROUTERS.names() if n != "pipeline"] + ["pipeline"]


def route(router, st, request, rng, dispatch=False):
    view = st.view
    iid = router.route(request, view.candidates, view, rng)
    if dispatch and iid is not None:
        st.dispatched(view[iid], request)
        router.on_dispatch(request, view[iid], 0.0)
    return iid


def requests(n, prefix_pool=3):
    """Requests with sessions and prefix chains, so every router has something to use."""
    return [req(f"r{k}", session=f"s{k % 7}", prompt=50 + k % 13,
                prefix=tuple(range(1000 * (k % prefix_pool), 1000 * (k % prefix_pool) + 6)))
            for k in range(n)]


def test_registry_has_every_router():
    assert set(ALL) == {"round_robin", "random", "least_loaded", "least_connections",
                        "least_response_time", "weighted_round_robin", "power_of_two",
                        "session_affinity", "locality", "pipeline"}
    for name in ALL:
        r = create_router(name)
        assert isinstance(r, PipelineRouter)
        assert r.name == name


def test_unknown_router_and_parameter_are_config_errors():
    with pytest.raises(ConfigError, match="round_robin"):
        create_router("nope")
    with pytest.raises(ConfigError, match="bogus"):
        create_router({"type": "locality", "params": {"bogus": 1}})
    with pytest.raises(ConfigError, match="load_factor"):
        create_router({"type": "session_affinity", "params": {"load_factor": 0.5}})


@pytest.mark.parametrize("name", ALL)
def test_only_candidates_never_down_draining_or_full(name):
    st = cluster(6, max_inflight=2)
    down(st, "i1")
    down(st, "i3", Health.DRAINING)
    load(st, "i4", req("x1"), req("x2"))  # full: no room
    allowed = {v.instance_id for v in st.view.candidates}
    assert allowed == {"i0", "i2", "i5"}
    r = create_router(name)
    rng = random.Random(3)
    for rq in requests(40):
        iid = route(r, st, rq, rng)
        assert iid in allowed
        r.on_finish(rq, st.view[iid], None, 0.0)


@pytest.mark.parametrize("name", ALL)
def test_subset_of_candidates_and_empty(name):
    st = cluster(5)
    r = create_router(name)
    rng = random.Random(0)
    subset = (st.view["i1"], st.view["i4"])
    for rq in requests(20):
        assert r.route(rq, subset, st.view, rng) in {"i1", "i4"}
        assert r.route(rq, (st.view["i2"],), st.view, rng) == "i2"
        assert r.route(rq, (), st.view, rng) is None


@pytest.mark.parametrize("name", ALL)
def test_same_seed_same_picks(name):
    def run():
        st = cluster(8, max_inflight=8)  # 40 stay in flight: some fill up, none is empty
        r = create_router(name)
        rng = random.Random(42)
        out = []
        for k, rq in enumerate(requests(60)):
            out.append(route(r, st, rq, rng, dispatch=True))
            if k % 3 == 2:  # release some, so loads move
                v = st.view[out[-1]]
                st.released(v, rq)
                r.on_finish(rq, v, None, 0.0)
        return out

    assert run() == run()


def test_round_robin_cycles_and_survives_shrinking():
    st = cluster(4)
    r = create_router("round_robin")
    rng = random.Random(0)
    picks = [route(r, st, req(f"r{k}"), rng) for k in range(9)]
    assert picks == ["i0", "i1", "i2", "i3", "i0", "i1", "i2", "i3", "i0"]
    down(st, "i1")
    picks = [route(r, st, req(f"q{k}"), rng) for k in range(4)]
    assert picks == ["i2", "i3", "i0", "i2"]  # continues after i0, skips the down i1


def wrr_cluster(*weights):
    return ClusterState([InstanceSpec(name, weight=w) for name, w in zip("abcde", weights,
                                                                          strict=False)])


@pytest.mark.parametrize(("weights", "expected"), [
    ((3, 1, 1), "abaca"),  # by hand: cw (3,1,1)a (1,2,2)b (4,-2,3)a (2,-1,4)c (5,0,0)a
    ((5, 1, 1), "aabacaa"),  # nginx's documented example
    ((1, 1, 1), "abc"),
])
def test_smooth_weighted_round_robin_exact_sequence(weights, expected):
    st = wrr_cluster(*weights)
    r = create_router("weighted_round_robin")
    rng = random.Random(0)
    got = "".join(route(r, st, req(f"r{k}"), rng) for k in range(2 * len(expected)))
    assert got == expected * 2


def test_weighted_round_robin_keeps_state_when_candidates_change():
    st = wrr_cluster(3, 1, 1)
    r = create_router("weighted_round_robin")
    rng = random.Random(0)
    view = st.view
    subset = (view["a"], view["c"])
    # a:3 c:1 -> cw (3,1)a->(-1,1) (2,2)a->(-2,2) (1,3)c->(1,-1) (4,0)a->(0,0)
    got = "".join(r.route(req(f"r{k}"), subset, view, rng) for k in range(4))
    assert got == "aaca"


def test_least_connections_fewest_inflight():
    st = cluster(3)
    load(st, "i0", req("a"), req("b"), req("c"))
    load(st, "i1", req("d"))
    load(st, "i2", req("e"), req("f"))
    assert route(create_router("least_connections"), st, req(), random.Random(0)) == "i1"


def test_least_connections_is_relative_to_max_inflight():
    st = ClusterState([InstanceSpec("big", max_inflight=10), InstanceSpec("small",
                                                                          max_inflight=4)])
    load(st, "big", *[req(f"b{k}") for k in range(4)])  # 40 % used
    load(st, "small", req("s0"), req("s1"))  # 50 % used
    assert route(create_router("least_connections"), st, req(), random.Random(0)) == "big"


def test_least_connections_ties_are_spread_by_rng():
    st = cluster(4)
    r = create_router("least_connections")
    picks = {route(r, st, req(), random.Random(seed)) for seed in range(40)}
    assert picks == {"i0", "i1", "i2", "i3"}


def test_least_loaded_counts_tokens_and_engine_queue():
    st = cluster(2)
    load(st, "i0", req("a", prompt=900, output=100))  # 1000 tokens
    load(st, "i1", req("b", prompt=90, output=10), req("c", prompt=90, output=10))
    r = create_router("least_loaded")
    assert route(r, st, req(), random.Random(0)) == "i1"  # 200 tokens < 1000
    st2 = cluster(2)
    load(st2, "i0", req("a", prompt=250, output=50))  # 300
    load(st2, "i1", req("b", prompt=150, output=50))  # 200
    assert route(r, st2, req(), random.Random(0)) == "i1"
    observe(st2, "i1", running=0, waiting=1)  # 200 + 1 x 200 queued = 400 > 300
    assert route(r, st2, req(), random.Random(0)) == "i0"
    r0 = create_router({"type": "least_loaded", "params": {"waiting_weight": 0}})
    assert route(r0, st2, req(), random.Random(0)) == "i1"


def test_least_response_time():
    st = cluster(3)
    st.latency(st["i0"], 0.1, 1.0, 10)  # expected 1.0 x 1
    st.latency(st["i1"], 0.1, 0.2, 10)
    load(st, "i1", req("a"), req("b"))  # expected 0.2 x 3 = 0.6
    load(st, "i2", *[req(f"c{k}") for k in range(5)])  # unobserved: 0.9 x 0.2 x 6 = 1.08
    r = create_router("least_response_time")
    assert route(r, st, req(), random.Random(0)) == "i1"
    for k in range(5):
        st.released(st["i2"], req(f"c{k}"))  # unobserved and idle: 0.18, tried first
    assert route(r, st, req(), random.Random(0)) == "i2"


def test_power_of_two_never_picks_the_more_loaded_sample():
    st = cluster(6, max_inflight=1000)
    gen = random.Random(7)
    for k in range(6):
        load(st, f"i{k}", *[req(f"x{k}_{j}", prompt=10 + gen.randrange(50))
                            for j in range(gen.randrange(4))])
    r = create_router("power_of_two")
    rng = random.Random(11)
    cands = st.view.candidates
    n = len(cands)
    for _ in range(300):
        probe = random.Random()
        probe.setstate(rng.getstate())
        i = probe.randrange(n)
        j = probe.randrange(n - 1)
        j += j >= i
        a, b = cands[i], cands[j]
        got = r.route(req(), cands, st.view, rng)
        assert got in (a.instance_id, b.instance_id)
        worse = max((a, b), key=lambda v: (v.inflight, v.inflight_tokens))
        better = min((a, b), key=lambda v: (v.inflight, v.inflight_tokens))
        if (worse.inflight, worse.inflight_tokens) != (better.inflight, better.inflight_tokens):
            assert got == better.instance_id


_SCENARIO = """
import random
from control_plane.routing import ROUTERS, create_router
from control_plane.prefix import block_hashes
from tests.builders import cluster, req
out = []
for name in ROUTERS.names():
    st = cluster(6, max_inflight=6)
    r = create_router(name)
    rng = random.Random(5)
    for k in range(60):
        toks = [7] * (256 * (k % 4)) + list(range(1000 * k, 1000 * k + 256))
        rq = req(f"r{k}", session=f"s{k % 9}", prefix=block_hashes(toks))
        view = st.view
        iid = r.route(rq, view.candidates, view, rng)
        out.append(iid)
        st.dispatched(view[iid], rq)
        r.on_dispatch(rq, view[iid], 0.0)
        if k % 2:
            st.released(view[iid], rq)
            r.on_finish(rq, view[iid], None, 0.0)
print(out)
"""


def test_same_picks_in_processes_with_different_hash_seeds():
    """Set iteration order of str ids is salted per process: it must not leak into picks."""
    root = Path(__file__).resolve().parents[2]
    runs = {subprocess.run([sys.executable, "-c", _SCENARIO], cwd=root, check=True,
                           capture_output=True, text=True,
                           env={"PYTHONHASHSEED": seed, "PYTHONPATH": str(root)}).stdout
            for seed in ("1", "2", "3")}
    assert len(runs) == 1
