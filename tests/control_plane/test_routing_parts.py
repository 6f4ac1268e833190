"""Filters, scorers, pickers and the user-composed ``pipeline`` router."""

from __future__ import annotations

import random

import pytest

from control_plane.errors import ConfigError
from control_plane.routing import FILTERS, PICKERS, SCORERS, create_router
from tests.builders import cluster, load, observe, req


def messy_cluster():
    """Mixed loads, stats and latencies, so every scorer has something to normalise."""
    st = cluster(6, max_inflight=8, kv_capacity_tokens=10_000)
    gen = random.Random(5)
    for k in range(6):
        iid = f"i{k}"
        observe(st, iid, running=gen.randrange(4), waiting=gen.randrange(3),
                kv=gen.random() * 0.8)
        load(st, iid, *[req(f"x{k}_{j}", prompt=gen.randrange(1, 300))
                        for j in range(gen.randrange(5))])
        if k % 2:
            st.latency(st[iid], 0.1 * (k + 1), 1.0 * (k + 1), 20)
    return st


@pytest.mark.parametrize("name", SCORERS.names())
def test_every_scorer_gives_one_score_in_unit_interval(name):
    st = messy_cluster()
    scorer = SCORERS.create(name)
    cands = st.view.candidates
    for rq in (req("a", session="s", prefix=(1, 2, 3)), req("b")):
        scores = scorer.score(rq, cands, st.view)
        assert len(scores) == len(cands)
        assert all(0.0 <= s <= 1.0 for s in scores)
    idle = cluster(3)
    assert all(0.0 <= s <= 1.0 for s in scorer.score(req(), idle.view.candidates, idle.view))


@pytest.mark.parametrize(("name", "expected"), [
    ("inflight", [1.0, 0.75, 0.5]),  # 1 - inflight / max_inflight(4)
    ("queue_depth", [1.0, 0.5, 0.0]),  # depth 0, 1, 2: min-max
    ("inflight_tokens", [1.0, 0.5, 0.0]),  # 0, 110, 220 tokens: 1 - x / max
])
def test_scorer_values(name, expected):
    st = cluster(3, max_inflight=4)
    load(st, "i1", req("a"))
    load(st, "i2", req("b"), req("c"))
    assert SCORERS.create(name).score(req(), st.view.candidates, st.view) == expected


def test_kv_utilization_and_response_time_values():
    st = cluster(2, kv_capacity_tokens=1000)
    observe(st, "i0", kv=0.25)
    assert SCORERS.create("kv_utilization").score(req(), st.view.candidates,
                                                  st.view) == [0.75, 1.0]
    st.latency(st["i0"], 0.5, 1.0, 10)
    st.latency(st["i1"], 0.5, 2.0, 10)
    got = SCORERS.create("response_time").score(req(), st.view.candidates, st.view)
    assert got == pytest.approx([1.0, 0.5])


@pytest.mark.parametrize(("spec", "kept"), [
    ("min_free_kv", ["i0", "i2"]),  # i1 at 0.92 >= 0.9
    ({"type": "min_free_kv", "params": {"threshold": 0.2}}, ["i0", "i1", "i2"]),  # none left
    ("max_inflight_ratio", ["i1", "i2"]),  # i0 at 9 / 10 >= 0.9
    ({"type": "max_inflight_ratio", "params": {"ratio": 0.1}}, ["i2"]),  # i1 at 1 / 10
    ("load_balance_guard", ["i2"]),  # 9 - 0 > 8 and 9 > 1.5 x 0
])
def test_filters(spec, kept):
    st = cluster(3, max_inflight=10, kv_capacity_tokens=10_000)
    observe(st, "i0", kv=0.5)
    observe(st, "i1", kv=0.92)
    observe(st, "i2", kv=0.3)
    load(st, "i0", *[req(f"a{k}", prompt=1, output=1) for k in range(9)])
    load(st, "i1", req("b", prompt=1, output=1))
    cands = st.view.candidates
    assert len(cands) == 3
    f = FILTERS.create(spec)
    assert [v.instance_id for v in f.filter(req(), cands, st.view)] == kept


def test_load_balance_guard_thresholds():
    st = cluster(3)
    load(st, "i0", *[req(f"a{k}") for k in range(9)])
    load(st, "i1", req("b"))
    guard = FILTERS.create("load_balance_guard")  # abs 8, rel 1.5: 9 - 0 > 8 and 9 > 0
    assert [v.instance_id for v in guard.filter(req(), st.view.candidates,
                                                st.view)] == ["i2"]
    load(st, "i2", req("c"))  # 9 - 1 = 8: balanced enough
    assert len(guard.filter(req(), st.view.candidates, st.view)) == 3
    rel = FILTERS.create({"type": "load_balance_guard",
                          "params": {"abs_threshold": 0, "rel_threshold": 10}})
    assert len(rel.filter(req(), st.view.candidates, st.view)) == 3  # 9 < 10 x 1


@pytest.mark.parametrize("name", PICKERS.names())
def test_pickers_return_a_valid_index(name):
    st = messy_cluster()
    picker = PICKERS.create(name)
    cands = st.view.candidates
    rng = random.Random(1)
    for scores in (None, [0.1 * k for k in range(len(cands))], [0.0] * len(cands)):
        for _ in range(20):
            assert 0 <= picker.pick(req(), cands, scores, rng) < len(cands)
    assert picker.pick(req(), cands[:1], None, rng) == 0


def test_max_score_picks_the_maximum_and_spreads_ties():
    st = cluster(4)
    cands = st.view.candidates
    p = PICKERS.create("max_score")
    assert p.pick(req(), cands, [0.1, 0.9, 0.3, 0.2], random.Random(0)) == 1
    tied = {p.pick(req(), cands, [0.5, 0.9, 0.1, 0.9], random.Random(s)) for s in range(30)}
    assert tied == {1, 3}


def test_max_score_breaks_a_tie_by_the_request_not_by_earlier_ties():
    # a simulation and a live run see different numbers of ties (timing): the request's
    # own tie-break must not depend on how many came before it, only on the seed
    st = cluster(4)
    cands = st.view.candidates
    tie = [0.7, 0.7, 0.2, 0.7]
    requests = [req(f"r{k}") for k in range(40)]

    def picks(rng, extra_ties_before):
        p = PICKERS.create("max_score")
        out = []
        for k, rq in enumerate(requests):
            for j in range(extra_ties_before if k == 5 else 0):
                p.pick(req(f"other{j}"), cands, tie, rng)
            out.append(p.pick(rq, cands, tie, rng))
        return out

    a = picks(random.Random(3), 0)
    assert a == picks(random.Random(3), 7)  # extra ties elsewhere change nothing
    assert set(a) == {0, 1, 3}  # spread over every tied candidate
    assert a != picks(random.Random(4), 0)  # the seed decides


def test_weighted_random_respects_zero_scores():
    st = cluster(3)
    p = PICKERS.create("weighted_random")
    picks = {p.pick(req(), st.view.candidates, [0.0, 1.0, 0.0], random.Random(s))
             for s in range(30)}
    assert picks == {1}


# -- pipeline -----------------------------------------------------------------------------
def test_pipeline_from_a_dict_spec():
    spec = {"type": "pipeline", "params": {
        "filters": ["min_free_kv"],
        "scorers": [{"type": "kv_utilization", "weight": 2},
                    ["inflight", 1],
                    {"type": "prefix_cache", "params": {"max_blocks": 64}, "weight": 0.5},
                    "queue_depth"],
        "picker": {"type": "max_score"},
        "name": "mine"}}
    r = create_router(spec)
    assert r.name == "mine"
    assert r.describe() == ("min_free_kv -> kv_utilization:2 -> inflight:1 -> "
                            "prefix_cache:0.5 -> queue_depth:1 -> max_score")
    st = cluster(3, kv_capacity_tokens=10_000)
    observe(st, "i0", kv=0.6)
    observe(st, "i1", kv=0.1)
    observe(st, "i2", kv=0.95)  # filtered out
    assert r.route(req(), st.view.candidates, st.view, random.Random(0)) == "i1"


def test_pipeline_defaults_to_random_choice_without_scorers():
    st = cluster(4)
    r = create_router("pipeline")
    picks = {r.route(req(), st.view.candidates, st.view, random.Random(s)) for s in range(40)}
    assert picks == {"i0", "i1", "i2", "i3"}


def test_unknown_part_lists_known_names():
    with pytest.raises(ConfigError) as err:
        create_router({"type": "pipeline", "params": {"scorers": ["nope"]}})
    for name in SCORERS.names():
        assert name in str(err.value)
    with pytest.raises(ConfigError, match="max_score"):
        create_router({"type": "pipeline", "params": {"picker": "nope"}})
    with pytest.raises(ConfigError, match="min_free_kv"):
        create_router({"type": "pipeline", "params": {"filters": ["nope"]}})


@pytest.mark.parametrize("weight", [-1, "2", True, None, float("inf"), float("nan")])
def test_bad_weight_is_a_config_error(weight):
    with pytest.raises(ConfigError, match="weight"):
        create_router({"type": "pipeline", "params": {"scorers": [["inflight", weight]]}})


@pytest.mark.parametrize("params", [
    {"scorers": "inflight"},
    {"filters": {"type": "min_free_kv"}},
    {"scorers": [["inflight", 1, 2]]},
    {"scorers": [{"type": "inflight", "weight": 1, "extra": 2}]},
    {"scorers": [{"type": "queue_depth", "params": {"bogus": 1}}]},
])
def test_malformed_pipeline_specs(params):
    with pytest.raises(ConfigError):
        create_router({"type": "pipeline", "params": params})


@pytest.mark.parametrize(("kind", "spec"), [
    (FILTERS, {"type": "min_free_kv", "params": {"threshold": 1.5}}),
    (FILTERS, {"type": "max_inflight_ratio", "params": {"ratio": 0}}),
    (FILTERS, {"type": "load_balance_guard", "params": {"rel_threshold": 0.5}}),
    (FILTERS, {"type": "load_balance_guard", "params": {"load": "kv"}}),
    (SCORERS, {"type": "response_time", "params": {"metric": "tpot"}}),
    (SCORERS, {"type": "inflight_tokens", "params": {"waiting_weight": -1}}),
    (SCORERS, {"type": "prefix_cache", "params": {"max_blocks": 0}}),
    (SCORERS, {"type": "session_affinity", "params": {"vnodes": 0}}),
])
def test_bad_part_parameters(kind, spec):
    with pytest.raises(ConfigError):
        kind.create(spec)
