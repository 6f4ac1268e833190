"""The fidelity report's parts: the workload from a trace, the figures and errors, and the
engine-side means of the live and simulated sides."""

from __future__ import annotations

import numpy as np
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
    rel_errors,
    sim_instances,
    sim_run,
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
