"""The fidelity report's parts: the workload from a trace, the figures and errors, and the
engine-side means of the live and simulated sides."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from control_plane.engine import EngineConfig
from control_plane.perf.base import Batch
from control_plane.perf.profile import FittedPredictor
from control_plane.types import InstanceSpec
from live.calibrate_metrics import MetricsSnapshot
from sagellm.fidelity import (
    engine_means,
    fidelity_workload,
    figures,
    pooled_figures,
    rel_errors,
    repeat_spread,
    routing_agreement,
    signed_errors,
    sim_instances,
    sim_run,
    target_report,
)
from sim.config import InstanceSim

PRED = FittedPredictor(0.010, 4e-4, 1e-7, 6e-4, 3e-6)


def _trace(tmp_path, rows):
    path = tmp_path / "t.csv"
    path.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n" + "".join(
        f"2023-11-16 18:15:{s:09.6f},{p},{o}\n" for s, p, o in rows))
    return path


def test_workload_scales_clips_and_rescales_the_arrival_gaps(tmp_path):
    path = _trace(tmp_path, [(0.0, 4000, 8), (1.0, 400, 1000), (3.0, 2, 40), (7.0, 100, 4)])
    w = fidelity_workload(path, 3, length_scale=0.25, max_prompt=512, max_output=128, skip=1)
    assert w.prompt_tokens.tolist() == [100, 1, 25]      # 400/4; 2/4 -> 1; 100/4
    assert w.output_tokens.tolist() == [128, 10, 1]      # 250 clipped; 40/4; 4/4
    assert w.unit_arrivals_s.tolist() == pytest.approx([0.0, 2 / 3, 2.0])   # mean gap 1 s
    reqs = w.requests(2.0)
    assert [r.arrival_s for r in reqs] == pytest.approx([0.0, 1 / 3, 1.0])
    assert [r.request_id for r in reqs] == ["f0", "f1", "f2"]
    with pytest.raises(ValueError, match="fewer than skip 3 \\+ 3"):
        fidelity_workload(path, 3, skip=3)
    with pytest.raises(ValueError, match="rate_per_s"):
        w.requests(0.0)


def test_errors_are_relative_to_live():
    live = {"ttft_p50": 0.2, "ttft_p90": 1.0, "tpot_p50": 0.02, "e2e_p50": 2.0,
            "e2e_p90": 4.0, "throughput": 5.0}
    sim = {**live, "ttft_p50": 0.15, "throughput": 5.5, "e2e_p90": float("nan")}
    err = rel_errors(sim, live)
    assert err["ttft_p50"] == pytest.approx(0.25) and err["throughput"] == pytest.approx(0.1)
    assert err["e2e_p50"] == 0.0 and np.isnan(err["e2e_p90"])


def _replay(e2e_s: list[float], start_s: float = 0.0) -> pd.DataFrame:
    """Completed requests arriving 1 s apart from ``start_s``, first token after 0.1 s,
    10 output tokens, the given end-to-end latencies."""
    n = len(e2e_s)
    arrival = start_s + np.arange(n, dtype=float)
    return pd.DataFrame({
        "request_id": [f"f{k}" for k in range(n)], "arrival_s": arrival,
        "dispatch_s": arrival, "first_token_s": arrival + 0.1,
        "finish_s": arrival + np.asarray(e2e_s), "output_tokens": 10, "status": "ok"})


def test_pooled_figures_take_quantiles_over_every_replay_and_average_throughput():
    a = _replay([1.0, 2.0, 3.0])              # 3 requests over 0..5 s: 0.6 req/s
    b = _replay([5.0, 6.0, 7.0], start_s=100.0)   # 3 over 0..9 s (its own clock): 1/3 req/s
    pooled = pooled_figures([a, b])
    assert pooled["e2e_p50"] == pytest.approx(4.0)          # median of 1, 2, 3, 5, 6, 7
    assert pooled["throughput"] == pytest.approx((0.6 + 1 / 3) / 2)
    assert pooled["ttft_p90"] == pytest.approx(0.1)
    assert pooled_figures([a]) == figures(a)
    with pytest.raises(ValueError, match="no replays"):
        pooled_figures([])


def test_repeat_spread_is_the_largest_difference_from_the_first_replay():
    first = {"ttft_p50": 0.2, "ttft_p90": 1.0, "tpot_p50": 0.02, "e2e_p50": 2.0,
             "e2e_p90": 4.0, "throughput": 5.0}
    second = {**first, "e2e_p50": 2.2, "throughput": 4.9}
    third = {**first, "e2e_p50": 1.9, "ttft_p90": float("nan")}
    spread = repeat_spread([first, second, third])
    assert spread["e2e_p50"] == pytest.approx(0.1)
    assert spread["throughput"] == pytest.approx(0.02)
    assert spread["ttft_p90"] == 0.0            # the NaN replay is left out, not propagated
    assert spread["tpot_p50"] == 0.0
    assert all(np.isnan(v) for v in repeat_spread([first]).values())


def test_routing_agreement_is_the_share_served_by_the_same_engine():
    sim = pd.DataFrame({"request_id": ["f0", "f1", "f2", "f3"],
                        "instance_id": ["a", "b", "a", "b"]})
    live = pd.DataFrame({"request_id": ["f0-r1", "f1-r1", "f2-r1", "f9-r1"],
                         "instance_id": ["a", "a", "a", "b"]})
    # f9 was not simulated: left out; f1 went elsewhere
    assert routing_agreement(live, sim, suffix="-r1") == pytest.approx(2 / 3)
    assert routing_agreement(sim, sim) == 1.0
    assert np.isnan(routing_agreement(live, sim))      # ids do not match without the suffix


def test_target_report_names_each_miss_with_the_live_spread():
    nan = float("nan")
    runs = [{"load": 0.5, "router": "round_robin",
             "err": {"e2e_p50": 0.08, "ttft_p90": 0.10, "throughput": 0.01},
             "live_spread": {"e2e_p50": 0.12, "ttft_p90": 0.3, "throughput": 0.02,
                             "tpot_p50": nan}},
            {"load": 1.1, "router": "least_loaded",
             "err": {"e2e_p50": 0.2, "ttft_p90": 0.2, "throughput": 0.02},
             "live_spread": {"e2e_p50": 0.05, "ttft_p90": 0.25, "throughput": 0.01,
                             "tpot_p50": nan}}]
    targets = {"e2e_p50": 0.05, "ttft_p90": 0.15, "throughput": 0.03}
    rep = target_report(runs, targets)
    assert not rep["targets_met"]
    assert rep["target_failures"] == [
        "load 0.5 round_robin: e2e_p50 error 8.0% > 5% (live replays differ by 12.0%)",
        "load 1.1 least_loaded: e2e_p50 error 20.0% > 5% (live replays differ by 5.0%)",
        "load 1.1 least_loaded: ttft_p90 error 20.0% > 15% (live replays differ by 25.0%)"]
    # only the miss larger than the live system's own spread is the simulator's for sure
    assert rep["failures_beyond_live_spread"] == [rep["target_failures"][1]]
    assert rep["live_spread_max"] == {"e2e_p50": 0.12, "ttft_p90": 0.3, "throughput": 0.02}
    one = [{**r, "err": {**r["err"], "e2e_p50": 0.01, "ttft_p90": nan},
            "live_spread": dict.fromkeys(r["live_spread"], nan)} for r in runs[:1]]
    rep = target_report(one, targets)
    assert rep["target_failures"] == ["load 0.5 round_robin: ttft_p90 error nan% > 15%"]
    assert rep["live_spread_max"] is None


def _insts(host=None):
    cfg = EngineConfig(num_gpu_blocks=1024, block_size=16)
    return [InstanceSim(InstanceSpec(f"i{k}", max_inflight=64), cfg, PRED, host=host)
            for k in range(2)]


def test_engine_side_means_split_queue_and_prefill_like_vllm():
    from control_plane.types import Request
    # two requests at once on one engine (one instance): the second waits for nothing (both
    # prefill in the first iteration); a third arrives during it and queues until its end
    reqs = [Request("a", 0.0, 200, output_tokens=5, max_tokens=5),
            Request("b", 0.0, 100, output_tokens=5, max_tokens=5),
            Request("c", 0.01, 50, output_tokens=5, max_tokens=5)]
    res = sim_run(reqs, _insts()[:1], router="round_robin", network_delay_s=0.002)
    first = PRED.iteration_s(Batch(300, 200 ** 2 + 100 ** 2, 0, 0))
    assert res.admissions["a"] == pytest.approx(0.002) == res.admissions["b"]
    assert res.admissions["c"] == pytest.approx(0.002 + first)   # the next iteration
    delta = MetricsSnapshot({"itl": 1.2, "queue": 0.3, "prefill": 0.6, "ttft": 0.95},
                            {"itl": 12.0, "queue": 3.0, "prefill": 3.0, "ttft": 3.0}, {})
    m = engine_means(delta, res, 0.002)
    assert (m["live_itl_mean_s"], m["live_queue_mean_s"], m["live_prefill_mean_s"],
            m["live_engine_ttft_mean_s"]) == pytest.approx((0.1, 0.1, 0.2, 0.95 / 3))
    recs = {r.request_id: r for r in res.records}
    c = recs["c"]
    # c reaches the engine at 0.012 and waits for the iteration in progress
    assert m["sim_queue_mean_s"] == pytest.approx((0.002 + first - 0.012) / 3)
    assert m["sim_prefill_mean_s"] == pytest.approx(np.mean(
        [(r.first_token_s - 0.002) - res.admissions[k] for k, r in recs.items()]))
    assert m["sim_engine_ttft_mean_s"] == pytest.approx(
        m["sim_queue_mean_s"] + m["sim_prefill_mean_s"])
    steps = sum(r.output_tokens - 1 for r in recs.values())
    assert m["sim_itl_mean_s"] == pytest.approx(
        sum(r.finish_s - r.first_token_s for r in recs.values()) / steps)
    assert c.first_token_s > res.admissions["c"]
    # the figures of the records
    f = figures(res.records)
    assert f["ttft_p50"] == pytest.approx(recs["b"].first_token_s - 0.0)


def test_profile_instances_share_a_host():
    insts = sim_instances("vllm-cpu-llama-small-pinned", ["e0", "e1"],
                          {"max_num_seqs": 16}, host="box")
    assert [i.host for i in insts] == ["box", "box"]
    assert insts[0].predictor.neighbour_decode_slowdown_decode > 0
    assert [i.host for i in sim_instances("vllm-cpu-llama-small-pinned", ["e0"], {})] == [None]


def test_signed_errors_keep_the_direction():
    live = {"ttft_p50": 0.2, "e2e_p50": 2.0, "throughput": 5.0}
    err = signed_errors({"ttft_p50": 0.15, "e2e_p50": 2.2, "throughput": 5.0}, live)
    assert err["ttft_p50"] == pytest.approx(-0.25) and err["e2e_p50"] == pytest.approx(0.1)
    assert err["throughput"] == 0.0 and np.isnan(err["tpot_p50"])     # missing on both
    assert rel_errors({"ttft_p50": 0.15}, live)["ttft_p50"] == pytest.approx(0.25)


def test_target_report_lists_the_misses_the_engines_speed_band_reaches_into():
    nan = float("nan")
    spread = {"e2e_p50": nan, "ttft_p90": nan, "throughput": nan, "tpot_p50": nan}
    runs = [{"load": 0.8, "router": "least_loaded", "live_spread": spread,
             "err": {"e2e_p50": 0.35, "ttft_p90": 0.3, "throughput": 0.01},
             # 3 % faster: 2 % under live; 3 % slower: 60 % over
             "err_speed_band": {"0.97": {"e2e_p50": -0.02, "ttft_p90": 0.2},
                                "1.03": {"e2e_p50": 0.6, "ttft_p90": 0.5}}}]
    rep = target_report(runs, {"e2e_p50": 0.05, "ttft_p90": 0.15, "throughput": 0.03})
    assert rep["target_failures"] == [
        "load 0.8 least_loaded: e2e_p50 error 35.0% > 5% (0.97/1.03 x the checked speed: "
        "-2.0%..+60.0%)",
        "load 0.8 least_loaded: ttft_p90 error 30.0% > 15% (0.97/1.03 x the checked speed: "
        "+20.0%..+50.0%)"]
    # the band around the e2e miss reaches into +-5 %; the TTFT one stays above 15 %
    assert rep["failures_within_speed_band"] == [rep["target_failures"][0]]
    assert rep["failures_within_sampling"] == []
