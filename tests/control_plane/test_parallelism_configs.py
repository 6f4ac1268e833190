"""Enumeration of (TP, PP, DP, EP) for a GPU budget; vLLM flags; workload statistics."""

from __future__ import annotations

import numpy as np
import pytest

from control_plane.errors import ConfigError, ValidationError
from control_plane.parallelism import SLOTarget, WorkloadStats, enumerate_configs, vllm_flags
from control_plane.perf import ParallelConfig, get_model


def shapes(model, gpus, per_node=8):
    return {(p.tp, p.pp, p.dp, p.ep) for p in enumerate_configs(get_model(model), gpus, per_node)}


def test_dense_model_on_8_gpus():
    got = shapes("llama-3-70b", 8)
    # TP powers of two within the node, PP dividing 80 layers, DP = replicas that fit
    assert got == {(1, 1, 8, 1), (1, 2, 4, 1), (1, 4, 2, 1), (1, 5, 1, 1), (1, 8, 1, 1),
                   (2, 1, 4, 1), (2, 2, 2, 1), (2, 4, 1, 1), (4, 1, 2, 1), (4, 2, 1, 1),
                   (8, 1, 1, 1)}


def test_tp_stays_inside_a_node_and_divides_heads():
    assert max(tp for tp, *_ in shapes("llama-3-70b", 16, per_node=4)) == 4
    # Qwen2.5-7B has 28 heads: TP 8 does not divide them
    assert all(tp in (1, 2, 4) for tp, *_ in shapes("qwen2.5-7b", 8))
    assert all(ep == 1 for *_, ep in shapes("llama-3-8b", 8))


def test_moe_gets_expert_parallel_over_tp_times_dp():
    got = shapes("mixtral-8x7b", 8)
    assert (1, 1, 8, 8) in got and (1, 1, 8, 1) in got
    assert (2, 2, 2, 4) in got
    for tp, _pp, dp, ep in got:
        assert ep in (1, tp * dp)


def test_enumeration_is_ordered_and_deterministic():
    a = enumerate_configs(get_model("llama-3-70b"), 8)
    assert a == enumerate_configs(get_model("llama-3-70b"), 8)
    keys = [(p.tp * p.pp, p.tp, p.pp, p.ep) for p in a]
    assert keys == sorted(keys)


@pytest.mark.parametrize("gpus", [0, -1, 1.5, True])
def test_bad_budget(gpus):
    with pytest.raises(ValidationError, match="gpus"):
        enumerate_configs(get_model("llama-3-8b"), gpus)


def test_vllm_flags():
    assert vllm_flags(ParallelConfig(tp=4, pp=1, dp=2)) == [
        "--tensor-parallel-size", "4", "--pipeline-parallel-size", "1",
        "--data-parallel-size", "2"]
    flags = vllm_flags(ParallelConfig(tp=1, dp=8, ep=8), gpu_memory_utilization=0.95)
    assert flags[-3:] == ["--enable-expert-parallel", "--gpu-memory-utilization", "0.95"]


def test_workload_stats_from_samples_and_percentiles():
    w = WorkloadStats.from_samples(np.array([100, 200, 300, 400]), np.array([10, 20, 30, 40]))
    assert w.prompt_mean == 250 and w.output_mean == 25
    assert w.prompt_sq_mean == pytest.approx((100**2 + 200**2 + 300**2 + 400**2) / 4)
    assert w.max_total_tokens == 440
    assert w.prompt_at(0.0) == 100 and w.prompt_at(1.0) == 400
    p = WorkloadStats.from_percentiles({0: 100, 100: 300}, {50: 64})
    assert p.prompt_mean == pytest.approx(200) and p.output_mean == 64
    assert p.prompt_at(0.5) == pytest.approx(200)
    f = WorkloadStats.fixed(1024, 256)
    assert f.prompt_at(0.99) == 1024 and f.max_total_tokens == 1280


def test_workload_stats_of_duck_types_a_trace():
    class T:
        prompt_tokens = np.array([5, 7])
        output_tokens = np.array([3, 3])
        name = "t"
    assert WorkloadStats.of(T()).prompt_mean == 6
    with pytest.raises(ConfigError, match="prompt_tokens"):
        WorkloadStats.of(object())


def test_bad_workload_and_slo_values():
    with pytest.raises(ConfigError, match="equal, non-empty"):
        WorkloadStats.from_samples([], [])
    with pytest.raises(ConfigError, match=">= 1"):
        WorkloadStats.from_samples([0, 3], [1, 1])
    with pytest.raises(ValidationError, match="ascending"):
        WorkloadStats.from_percentiles({50: 400, 90: 100}, {50: 10})
    with pytest.raises(ValidationError, match="tpot_s"):
        SLOTarget(tpot_s=0)
    with pytest.raises(ValidationError, match="percentile"):
        SLOTarget(percentile=120)
    assert SLOTarget(2.0, 0.1).describe() == "TTFT p99 <= 2.00 s, TPOT p99 <= 100 ms"
