"""sagellm.headline: threshold search, finalists, a whole study on a tiny trace, the report."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest

from control_plane import ConfigError
from sagellm.compare import WorkloadChoice, grid_from_dict
from sagellm.headline import (
    Pair,
    Study,
    bracket,
    interior,
    pick_finalists,
    rank,
    run_study,
    search,
    short_name,
)
from sagellm.headline_figures import isolated_ttft_miss, run_extras
from sagellm.headline_report import write_headline
from tests.sagellm.compare_helpers import SMALL_CLUSTER, write_azure_trace
from workloads.trace import Trace


@pytest.mark.parametrize(("points", "target", "expected"), [
    ({0.5: 1.0, 1.0: 0.95, 1.5: 0.5}, 0.9, (1.0, 1.5)),
    ({0.5: 1.0, 1.0: 0.95}, 0.9, (1.0, None)),            # never fails
    ({0.5: 0.8, 1.0: 0.7}, 0.9, (None, 0.5)),             # never passes
    ({0.5: 1.0, 1.0: 0.8, 1.5: 0.95}, 0.9, (0.5, 1.0)),   # not monotone: first failure
    ({0.5: 1.0, 1.0: float("nan")}, 0.9, (0.5, 1.0)),     # NaN fails
    ({0.5: 0.9}, 0.9, (0.5, None)),                       # the target itself passes
])
def test_bracket(points, target, expected):
    assert bracket(points, target) == expected


def test_interior_points_are_even_rounded_and_inside():
    assert interior(0.3, 0.6, 2) == [0.4, 0.5]
    assert interior(0.0, 1.0, 1) == [0.5]
    assert interior(1.0, 1.00005, 3) == []  # rounding collapses them onto the ends
    with pytest.raises(ValueError):
        interior(1.0, 1.0, 1)


def _step_evaluator(edges: dict[str, float], calls: list):
    """Attainment 1 below a key's edge load, 0.5 at and above it."""
    def evaluate(todo):
        calls.append(list(todo))
        return {(k, x): (1.0 if x < edges[k] else 0.5) for k, x in todo}
    return evaluate


def test_search_brackets_each_key_within_the_rounds_precision():
    edges = {"a": 0.77, "b": 0.2, "never": 0.0, "always": 99.0, "low": 0.04}
    calls: list = []
    got = search(_step_evaluator(edges, calls), list(edges), 0.9, (0.3, 0.6, 0.9),
                 rounds=6, per_round=1, min_load=0.02, max_load=2.0)
    a = got["a"]
    # loads are rounded to 4 decimals
    assert a.passed < 0.77 <= a.failed and a.width <= 0.3 / 2 ** 6 + 1e-4
    assert got["b"].passed < 0.2 <= got["b"].failed  # bracketed by extending downwards
    assert got["never"].passed is None and got["never"].points[0][0] == 0.02
    assert got["always"].failed is None and got["always"].passed == 2.0
    assert got["low"].passed < 0.04 <= got["low"].failed
    asked = [p for batch in calls for p in batch]
    assert len(asked) == len(set(asked))  # no point is asked twice
    assert len(calls[0]) == 3 * len(edges)  # the grid, all keys in one batch


def test_search_per_round_points_shrink_the_bracket_faster():
    calls: list = []
    got = search(_step_evaluator({"a": 0.5}, calls), ["a"], 0.9, (0.3, 0.9), rounds=2,
                 per_round=2, min_load=0.1, max_load=1.0)
    assert [len(c) for c in calls] == [2, 2, 2]
    assert got["a"].width == pytest.approx(0.6 / 9, abs=1e-4)


def test_search_rejects_bad_limits():
    with pytest.raises(ValueError):
        search(lambda t: {}, ["a"], 0.9, (1.0,), rounds=1, min_load=0.0, max_load=1.0)


def test_short_names():
    assert short_name("fifo") == "fifo"
    assert short_name({"type": "locality", "params": {"block_size": 512}}) == "locality"
    assert short_name({"type": "pipeline", "params": {"name": "llm-d"}}) == "llm-d"
    assert Pair("slo", {"type": "pipeline"}).label == "slo / pipeline"
    assert Pair("slo", "round_robin", 0.8).label == "slo+gate / round_robin"


def _rows(*rows):
    cols = ["pair", "policy_name", "slo_attainment", "goodput_rps", "ttft_p99_s",
            "e2e_p99_s", "rejected"]
    return pd.DataFrame([dict(zip(cols, r, strict=True)) for r in rows])


def test_rank_and_finalists_skip_identical_figures():
    df = _rows(("fifo / rr", "fifo", 0.80, 10.0, 1.0, 9.0, 0),
               ("prio / ll", "prio", 0.99, 12.0, 1.0, 8.0, 0),
               ("slo / ll", "slo", 0.99, 12.0, 1.0, 8.0, 0),      # same as prio / ll
               ("prio / rr", "prio", 0.99, 12.0, 1.0, 7.0, 0),    # better e2e: ranked 1st
               ("fifo / ll", "fifo", 0.85, 11.0, 1.0, 9.0, 0),
               ("cost / rr", "cost", 0.50, 5.0, 1.0, 9.0, 3))
    ranked = rank(df)
    assert list(ranked["pair"][:3]) == ["prio / rr", "prio / ll", "slo / ll"]
    assert pick_finalists(ranked, "fifo / rr", "fifo", 4) == [
        "fifo / rr", "fifo / ll", "prio / rr", "prio / ll"]
    assert pick_finalists(ranked, "fifo / rr", "fifo", 5)[-1] == "cost / rr"
    # a pair asked for comes right after the router's gain alone
    assert pick_finalists(ranked, "fifo / rr", "fifo", 4, ["cost / rr"]) == [
        "fifo / rr", "fifo / ll", "cost / rr", "prio / rr"]


def test_isolated_ttft_miss_counts_prompts_slower_than_their_slo():
    cluster = grid_from_dict({"clusters": [{"name": "small", **SMALL_CLUSTER}],
                              "policies": ["fifo"], "routers": ["round_robin"],
                              "loads": [1.0]}).clusters[0]
    # fastest nominal prefill: 20,000 tok/s -> 1 s for 20,000 tokens
    trace = Trace(np.array([0.0, 1.0, 2.0]), np.array([30000, 1000, 30000]),
                  np.array([5, 5, 5]), priority=np.array([0, 0, 4]),
                  slo_ttft_s=np.array([1.0, 1.0, np.nan]))
    assert isolated_ttft_miss(trace, cluster) == {0: 0.5, 4: 0.0}


def _study(tmp_path, **kw):
    trace = write_azure_trace(tmp_path / "azure.csv", n=160)
    cluster = grid_from_dict({"clusters": [{"name": "small", **SMALL_CLUSTER}],
                              "policies": ["fifo"], "routers": ["round_robin"],
                              "loads": [1.0]}).clusters[0]
    base = {"name": "tiny", "title": "Tiny", "workload": WorkloadChoice(
        trace=str(trace), requests=120, classes="default"), "cluster": cluster,
        "policies": ("fifo", "priority"), "routers": ("round_robin", "least_loaded"),
        "grid": (0.2, 0.8, 1.6), "knee_rounds": 1, "goal_rounds": 2, "per_round": 1,
        "finalists": 3, "max_load": 3.0, "sensitivity_targets": ()}
    return Study(**{**base, **kw})


def test_study_validation(tmp_path):
    with pytest.raises(ConfigError, match="baseline"):
        _study(tmp_path, baseline=Pair("cost", "round_robin")).validate()
    with pytest.raises(ConfigError, match="grid"):
        _study(tmp_path, grid=(0.8, 0.2)).validate()
    with pytest.raises(ConfigError, match="same name"):
        _study(tmp_path, routers=("locality", {"type": "locality"})).validate()


def test_gated_pairs_run_with_the_gate_and_the_gate_alone_is_a_finalist(tmp_path):
    study = _study(tmp_path, gates=(None, 0.8), finalists=4)
    labels = [p.label for p in study.pairs()]
    assert "priority+gate / least_loaded" in labels and len(labels) == 8
    assert study.policy_labels() == ["fifo", "priority", "fifo+gate", "priority+gate"]
    assert study.gate_alone() == Pair("fifo", "round_robin", 0.8)
    r = run_study(study, tmp_path / "work", workers=1)
    assert r.finalists[:1] == ["fifo / round_robin"] and "fifo+gate / round_robin" in r.finalists
    gated = r.rows[r.rows["pair"].str.contains("gate")]
    assert set(gated["gate"]) == {0.8} and set(gated["cluster"]) == {"small+gate0.8"}
    assert r.rows[~r.rows["pair"].str.contains("gate")]["gate"].isna().all()
    # gated and ungated runs of the same point are different runs (keys and files)
    knee = r.rows[np.isclose(r.rows["load"], r.knee_load)]
    assert knee["key"].is_unique
    text = write_headline([r], tmp_path / "rep").read_text()
    assert "TPOT admission gate" in text and "The TPOT gate alone" in text
    with pytest.raises(ConfigError, match="tpot_gate"):
        _study(tmp_path, gates=(None, -1.0)).validate()


def test_run_study_end_to_end_and_the_report(tmp_path):
    study = _study(tmp_path, sensitivity_targets=(0.95,), seeds=(1,))
    r = run_study(study, tmp_path / "work", workers=1)
    assert set(r.sensitivity) <= {0.95} and r.seed_checks[0][0] == 1
    assert set(r.rows["seed"]) == {0, 1} and set(r.main_rows["seed"]) == {0}
    assert r.finalists[0] == "fifo / round_robin" and len(r.finalists) <= 3
    assert set(r.at_knee["pair"]) == {p.label for p in study.pairs()}
    assert len(r.at_knee) == 4 and np.allclose(r.at_knee["load"], r.knee_load)
    base = r.at_knee[r.at_knee["pair"] == "fifo / round_robin"].iloc[0]
    assert base["slo_attainment"] < r.knee_target  # the knee is a failing load
    assert set(r.goal) == set(r.finalists)
    assert r.runs == len(r.rows) > 0
    assert r.best_ratio in r.finalists
    for col in ("waiting_at_end", "drain_s", "stage", "slo_attainment"):
        assert col in r.rows
    # a rerun reuses every run file and gives the same answers
    again = run_study(study, tmp_path / "work", workers=1)
    assert again.runs == 0 and again.knee_load == r.knee_load
    assert again.goal == r.goal
    path = write_headline([r], tmp_path / "rep", command="python x.py")
    text = path.read_text()
    for part in ("## Answers", "interactive", "TTFT SLO", "Knee search", "python x.py",
                 "headline_attainment.png", "Other workload seeds", "Why requests miss"):
        assert part in text
    for stem in ("attainment", "goodput", "latency_p99", "pairs_at_knee"):
        assert (tmp_path / "rep" / f"headline_{stem}.png").stat().st_size > 0
    csv = pd.read_csv(tmp_path / "rep" / "headline_summaries.csv")
    assert len(csv) == len(r.rows)


def test_run_study_with_a_check_cluster_reruns_key_points(tmp_path):
    study = _study(tmp_path)
    study = Study(**{**study.__dict__, "check_cluster": study.cluster.__class__(
        **{**{f: getattr(study.cluster, f) for f in study.cluster.__slots__},
           "name": "other", "definition": '{"other": 1}'}),
        "policies": ("fifo",), "routers": ("round_robin", "least_loaded"),
        "finalists": 2})
    half = copy.deepcopy(SMALL_CLUSTER)
    for inst in half["cluster"]["instances"]:
        inst["max_inflight"] //= 2
    variant = grid_from_dict({"clusters": [{"name": "half", **half}], "policies": ["fifo"],
                              "routers": ["round_robin"], "loads": [1.0]}).clusters[0]
    study = Study(**{**study.__dict__, "variants": (("half the slots", variant),)})
    r = run_study(study, tmp_path / "work", workers=1)
    assert not r.check_rows.empty
    assert set(r.check_rows["cluster"]) == {"other"}
    assert np.isclose(r.check_rows["study_load"].iloc[0], r.knee_load)
    assert np.isclose(r.check_rows["load"].iloc[0], r.knee_load)  # same capacity estimate
    # a variant with another capacity estimate runs at the knee's request rate
    knee_rps = r.at_knee["offered_rps"].iloc[0]
    v = r.variant_rows
    assert set(v["variant"]) == {"half the slots"} and set(v["cluster"]) == {"half"}
    assert not np.isclose(v["load"].iloc[0], r.knee_load)
    assert np.allclose(v["offered_rps"], knee_rps, rtol=1e-3)
    assert "Deployment variants" in write_headline([r], tmp_path / "rep").read_text()


def test_run_extras_backlog_and_miss_reasons():
    nan = float("nan")
    df = pd.DataFrame({
        "arrival_s": [0.0, 1.0, 2.0, 3.0],
        "first_token_s": [0.5, 3.5, nan, 3.2],
        "finish_s": [0.55, 9.0, nan, 4.2],
        "output_tokens": [2, 11, 5, 1],
        "status": ["ok", "ok", "rejected", "ok"],
        "priority": [0, 0, 0, 4],
        "slo_ttft_s": [1.0, 1.0, 1.0, nan],
        "slo_tpot_s": [0.1, 0.1, 0.1, nan],
        "slo_e2e_s": [nan, nan, nan, 1.0]})
    got = run_extras(df)
    assert got["waiting_at_end"] == 2  # first token after the last arrival: 1 and 3
    assert got["drain_s"] == pytest.approx(6.0)
    assert got["miss_ttft_p0"] == pytest.approx(1 / 3)  # request 1 (2.5 s)
    assert got["miss_tpot_p0"] == pytest.approx(1 / 3)  # request 1 (0.55 s / token)
    assert got["miss_lost_p0"] == pytest.approx(1 / 3)  # the rejected one
    assert got["miss_e2e_p4"] == pytest.approx(1.0)
    assert got["ttft_p99_s_p4"] == pytest.approx(0.2)
