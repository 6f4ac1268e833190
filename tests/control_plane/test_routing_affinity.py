"""Session affinity: consistent hashing with bounded loads."""

from __future__ import annotations

import random

import pytest

from control_plane.routing import SCORERS, create_router
from control_plane.routing.affinity import ConsistentHashRing, stable_hash
from control_plane.types import Health
from tests.builders import cluster, down, load, req


def pick(router, st, rq, seed=0):
    return router.route(rq, st.view.candidates, st.view, random.Random(seed))


def test_stable_hash_is_fixed():
    assert stable_hash("session-1") == stable_hash("session-1")
    assert stable_hash("a") != stable_hash("b")
    assert 0 <= stable_hash("x") < 2**64


def test_same_session_same_instance():
    st = cluster(8)
    r = create_router("session_affinity")
    for s in range(30):
        got = {pick(r, st, req(f"r{s}_{k}", session=f"s{s}"), seed=k) for k in range(5)}
        assert len(got) == 1


def test_sessions_spread_over_instances():
    st = cluster(8)
    r = create_router("session_affinity")
    used = {pick(r, st, req(f"r{s}", session=f"s{s}")) for s in range(200)}
    assert len(used) == 8


@pytest.mark.parametrize("health", [Health.DOWN, Health.DRAINING])
def test_removing_an_instance_remaps_only_its_sessions(health):
    st = cluster(8)
    r = create_router("session_affinity")
    before = {s: pick(r, st, req(f"r{s}", session=f"s{s}")) for s in range(200)}
    down(st, "i3", health)
    after = {s: pick(r, st, req(f"r{s}", session=f"s{s}")) for s in range(200)}
    moved = {s for s in before if before[s] != after[s]}
    assert moved == {s for s in before if before[s] == "i3"}
    assert moved  # i3 owned some sessions
    assert "i3" not in after.values()


def test_bounded_load_spills_and_comes_back():
    st = cluster(4)
    r = create_router("session_affinity")
    home = pick(r, st, req("a", session="alice"))
    hogs = [req(f"h{k}") for k in range(3)]
    load(st, home, *hogs)  # total 3, cap = ceil(1.25 * 4 / 4) = 2: home (3) is overloaded
    spill = pick(r, st, req("b", session="alice"))
    assert spill != home
    assert pick(r, st, req("c", session="alice")) == spill  # the spill is stable too
    for h in hogs:
        st.released(st[home], h)
    assert pick(r, st, req("d", session="alice")) == home


def test_target_without_room_is_skipped():
    st = cluster(4, max_inflight=1)
    r = create_router("session_affinity")
    home = pick(r, st, req("a", session="bob"))
    load(st, home, req("x"))  # full: no longer a candidate
    assert pick(r, st, req("b", session="bob")) not in (home, None)


def test_load_factor_one_is_strict():
    st = cluster(2)
    r = create_router({"type": "session_affinity", "params": {"load_factor": 1.0}})
    home = pick(r, st, req("a", session="s"))
    load(st, home, req("x"))  # total 1, cap = ceil(1 * 2 / 2) = 1
    assert pick(r, st, req("b", session="s")) != home


@pytest.mark.parametrize(("fallback", "same"), [("request", False), ("tenant", True)])
def test_sessionless_fallback(fallback, same):
    st = cluster(16)
    r = create_router({"type": "session_affinity", "params": {"fallback": fallback}})
    got = {pick(r, st, req(f"r{k}", tenant="acme")) for k in range(40)}
    assert (len(got) == 1) is same


def test_ring_points_and_walk():
    ring = ConsistentHashRing(("a", "b", "c"), 10)
    assert len(ring.points) == 30
    assert ring.points == sorted(ring.points)
    for key in (0, 2**63, 2**64 - 1):
        assert sorted(ring.walk(key)) == ["a", "b", "c"]


def test_scorer_marks_the_target():
    st = cluster(5)
    scorer = SCORERS.create("session_affinity")
    r = create_router("session_affinity")
    rq = req("a", session="carol")
    target = pick(r, st, rq)
    scores = scorer.score(rq, st.view.candidates, st.view)
    assert [v.instance_id for v, s in zip(st.view.candidates, scores, strict=True)
            if s == 1.0] == [target]
    assert sorted(set(scores)) == [0.0, 1.0]
