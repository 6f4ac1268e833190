"""Paired errors and bootstrap intervals of the fidelity report (sagellm.fidelity_stats)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sagellm.fidelity import target_report
from sagellm.fidelity_stats import (
    aligned,
    drift_summary,
    error_intervals,
    error_table,
    paired_errors,
    window_errors,
)


def _records(e2e_s, ttft_s=0.1, out=11, ids=None, status="ok") -> pd.DataFrame:
    n = len(e2e_s)
    arrival = np.arange(n, dtype=float)
    return pd.DataFrame({
        "request_id": ids or [f"q{k}" for k in range(n)], "arrival_s": arrival,
        "dispatch_s": arrival, "first_token_s": arrival + ttft_s,
        "finish_s": arrival + np.asarray(e2e_s, dtype=float), "output_tokens": out,
        "status": status})


def _ids(n):
    return [f"q{k}" for k in range(n)]


def test_aligned_orders_by_the_given_ids_and_marks_failed_or_missing_requests_nan():
    df = _records([1.0, 2.0, 3.0])
    df.loc[1, "status"] = "error"
    a = aligned(df, ["q2", "q1", "q0", "q9"])
    assert a["e2e_s"][0] == 3.0 and a["e2e_s"][2] == 1.0
    assert np.isnan(a["e2e_s"][1]) and np.isnan(a["e2e_s"][3])
    assert a["tpot_s"][0] == pytest.approx((3.0 - 0.1) / 10)
    with pytest.raises(ValueError, match=r"\['q0'\] occur more than once"):
        aligned(pd.concat([df, df.iloc[:1]]), _ids(3))


def test_paired_errors_are_the_median_per_request_ratio_whatever_the_quantiles_do():
    rng = np.random.default_rng(1)
    live = rng.lognormal(0.0, 1.0, 301)
    # every request 4 % slower in the simulation: the paired error is exactly that
    p = paired_errors([aligned(_records(live), _ids(301))],
                      [aligned(_records(live * 1.04, ttft_s=0.1 * 1.04), _ids(301))])
    assert p["e2e"] == pytest.approx(0.04) and p["ttft"] == pytest.approx(0.04)
    # a request missing on one side is left out, not counted as an error
    sim = _records(live * 1.04)
    sim.loc[0, "status"] = "error"
    assert paired_errors([aligned(_records(live), _ids(301))],
                         [aligned(sim, _ids(301))])["e2e"] == pytest.approx(0.04)
    with pytest.raises(ValueError, match="differ in shape"):
        paired_errors([aligned(_records(live), _ids(301))] * 2,
                      [aligned(_records(live), _ids(301))])


def test_a_uniform_scaling_has_a_point_interval_at_the_scaling():
    live = np.linspace(0.5, 5.0, 200)
    la = [aligned(_records(live), _ids(200))]
    sa = [aligned(_records(live * 1.1, ttft_s=0.11), _ids(200))]
    ci = error_intervals(la, sa, draws=200)
    for field in ("e2e_p50", "e2e_p90", "ttft_p50", "ttft_p90"):
        assert ci[field] == [pytest.approx(0.1), pytest.approx(0.1)], field


def test_intervals_hold_the_point_error_narrow_with_more_requests_and_are_seeded():
    def run(n, seed=0):
        rng = np.random.default_rng(7)
        # bimodal latencies (short and long outputs) and per-request noise on each side
        live = np.where(rng.random(n) < 0.6, rng.uniform(0.5, 1.5, n), rng.uniform(4, 8, n))
        sim = live * rng.lognormal(0.0, 0.1, n)
        la, sa = [aligned(_records(live), _ids(n))], [aligned(_records(sim), _ids(n))]
        point = np.median(sim) / np.median(live) - 1
        return error_intervals(la, sa, seed=seed)["e2e_p50"], point
    (lo, hi), point = run(150)
    assert lo <= point <= hi and hi - lo > 0.01
    (lo4, hi4), _ = run(1200)
    assert hi4 - lo4 < (hi - lo) / 1.8          # about 1/sqrt(8) as wide
    assert run(150, seed=3) == run(150, seed=3) and run(150, seed=3) != run(150, seed=4)


def test_replays_are_drawn_together_and_pooled():
    live1, live2 = np.linspace(1, 2, 50), np.linspace(1, 2, 50) * 1.2
    la = [aligned(_records(live1), _ids(50)), aligned(_records(live2), _ids(50))]
    sa = [aligned(_records(live1), _ids(50)), aligned(_records(live2), _ids(50))]
    assert error_intervals(la, sa, draws=100)["e2e_p50"] == [0.0, 0.0]
    with pytest.raises(ValueError, match="different lengths"):
        error_intervals([la[0], aligned(_records(live1[:10]), _ids(10))], sa)
    with pytest.raises(ValueError, match="level"):
        error_intervals(la, sa, level=1.0)
    with pytest.raises(ValueError, match="no replays"):
        paired_errors([], [])


def test_target_report_lists_the_misses_another_sample_could_have_met():
    nan = float("nan")
    base = {"load": 0.5, "router": "least_loaded",
            "live_spread": {"e2e_p50": nan, "ttft_p90": nan, "throughput": nan,
                            "tpot_p50": nan}}
    runs = [{**base, "err": {"e2e_p50": 0.12, "ttft_p90": 0.2, "throughput": 0.01},
             "err_ci90": {"e2e_p50": [0.01, 0.23], "ttft_p90": [0.16, 0.3]}},
            {**base, "load": 1.1, "err": {"e2e_p50": 0.11, "ttft_p90": 0.0, "throughput": 0.0},
             "err_ci90": {"e2e_p50": [-0.14, -0.07]}}]
    rep = target_report(runs, {"e2e_p50": 0.05, "ttft_p90": 0.15, "throughput": 0.03})
    assert rep["target_failures"] == [
        "load 0.5 least_loaded: e2e_p50 error 12.0% > 5% (90% interval +1.0%..+23.0%)",
        "load 0.5 least_loaded: ttft_p90 error 20.0% > 15% (90% interval +16.0%..+30.0%)",
        "load 1.1 least_loaded: e2e_p50 error 11.0% > 5% (90% interval -14.0%..-7.0%)"]
    # only the first interval reaches into +-5 %; a miss on both sides of it is not within
    assert rep["failures_within_sampling"] == [rep["target_failures"][0]]


def test_error_table_pairs_each_live_replay_with_its_own_simulation():
    live1, live2 = np.linspace(1, 3, 40), np.linspace(1, 3, 40) * 1.5

    def frame(src, e2e, suffix=""):
        return _records(e2e, ids=[f"q{k}{suffix}" for k in range(40)]).assign(
            source=src, load=0.5, router="round_robin")
    records = pd.concat([frame("live", live1), frame("live-2", live2, "-r1"),
                         frame("sim", live1 * 1.1), frame("sim-2", live2 * 1.1, "-r1"),
                         # a group with no simulation to pair with is left out
                         frame("live", live1).assign(load=0.8)])
    t = error_table(records, draws=100)
    assert t[["load", "router", "replays"]].values.tolist() == [[0.5, "round_robin", 2]]
    row = t.iloc[0]
    assert row["e2e_p50"] == pytest.approx(0.1) and row["paired_e2e"] == pytest.approx(0.1)
    assert row["e2e_p50_lo"] == pytest.approx(0.1) and row["e2e_p50_hi"] == pytest.approx(0.1)
    # sim-2 paired with live (not live-2) would give errors of 1.1 / 1.5 - 1 per request
    assert row["paired_tpot"] == pytest.approx(0.1, abs=0.01)
    emulated = pd.concat([frame("live (emulated engines)", live1), frame("sim", live1)])
    assert error_table(emulated, draws=10).iloc[0]["paired_e2e"] == 0.0
    with pytest.raises(ValueError, match="missing column"):
        error_table(records.drop(columns="source"))


def test_window_errors_locate_a_slowdown_in_the_replay():
    # 100 requests; the other side is 20 % slower on requests 40-59 only (a host slowdown in
    # the middle fifth), 2 % faster elsewhere
    e2e = np.linspace(1.0, 3.0, 100)
    factor = np.where((np.arange(100) >= 40) & (np.arange(100) < 60), 1.2, 0.98)
    ref = aligned(_records(e2e, ttft_s=0.0), _ids(100))
    other = aligned(_records(e2e * factor, ttft_s=0.0), _ids(100))
    w = window_errors(ref, other)
    assert w == pytest.approx([-0.02, -0.02, 0.2, -0.02, -0.02])
    # the whole-replay paired error hides it
    assert paired_errors([ref], [other])["tpot"] == pytest.approx(-0.02)
    tenths = window_errors(ref, other, windows=10, column="e2e_s")
    assert tenths[3:7] == pytest.approx([-0.02, 0.2, 0.2, -0.02])
    # a fifth where no request completed on one side is NaN; more windows than requests
    gone = dict(other, tpot_s=np.where(np.arange(100) < 20, np.nan, other["tpot_s"]))
    assert np.isnan(window_errors(ref, gone)[0])
    small = aligned(_records([1.0, 2.0], ttft_s=0.0), _ids(2))
    assert window_errors(small, small, windows=5) == [0.0, 0.0]


def test_window_errors_refuse_bad_arguments():
    a = aligned(_records([1.0, 2.0, 3.0]), _ids(3))
    with pytest.raises(ValueError, match="windows=0"):
        window_errors(a, a, windows=0)
    with pytest.raises(ValueError, match="column='x'"):
        window_errors(a, a, column="x")
    with pytest.raises(ValueError, match="differ in shape"):
        window_errors(a, aligned(_records([1.0, 2.0]), _ids(2)))


def test_drift_summary_pools_the_runs_windows():
    runs = [{"drift": {"sim_vs_live_tpot": [[0.1, -0.2], [0.05, float("nan")]],
                       "live_vs_first_tpot": [[-0.3, 0.1]]}},
            {"drift": {"sim_vs_live_tpot": [[0.0, 0.4]], "live_vs_first_tpot": [[0.2, 0.02]]}}]
    d = drift_summary(runs)
    assert d["sim_vs_live_median"] == pytest.approx(0.1)       # |0.1, 0.2, 0.05, 0, 0.4|
    assert d["live_vs_first_median"] == pytest.approx(0.15)    # |0.3, 0.1, 0.2, 0.02|
    assert d["sim_vs_live_p90"] == pytest.approx(np.quantile([0.1, 0.2, 0.05, 0.0, 0.4], 0.9))
    one = [{"drift": {"sim_vs_live_tpot": [[0.1]], "live_vs_first_tpot": []}}]
    assert drift_summary(one) is None                          # one live replay: no floor
