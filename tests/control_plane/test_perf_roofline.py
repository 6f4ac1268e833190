"""Roofline predictor: physical facts, exact decode runs, determinism, consistency."""

from __future__ import annotations

import math

import pytest

from control_plane.perf import (
    GPUS,
    MODELS,
    Batch,
    ParallelConfig,
    RooflinePredictor,
    load_coefficients,
    weights_bytes_per_gpu,
)
from control_plane.perf.ops import LAYER_OPS, layer_op_times

COEFFS = load_coefficients()


def rp(model="llama-3-8b", gpu="h100", **kw):
    interconnect = kw.pop("interconnect", None)
    return RooflinePredictor(model, gpu, ParallelConfig(**kw), COEFFS, interconnect=interconnect)


def prefill(n: int) -> Batch:
    return Batch(prefill_tokens=n, prefill_attention=n * n)


def decode(seqs: int, ctx_each: int = 1000) -> Batch:
    return Batch(decode_seqs=seqs, decode_context=seqs * ctx_each)


def test_tp_speedup_is_below_linear():
    for batch in (prefill(4096), decode(64)):
        t1 = rp(tp=1).iteration_s(batch)
        for tp in (2, 4, 8):
            t = rp(tp=tp).iteration_s(batch)
            assert t1 / tp < t < t1, (tp, batch)


def test_pcie_tp_is_slower_than_nvlink_tp():
    for batch in (prefill(2048), decode(32)):
        nvlink = rp(tp=4).iteration_s(batch)
        pcie = rp(tp=4, interconnect="pcie").iteration_s(batch)
        assert pcie > nvlink
    # without TP the link does not matter
    assert rp(interconnect="pcie").iteration_s(decode(8)) == rp().iteration_s(decode(8))


def test_decode_at_batch_one_is_memory_bound():
    for gpu in ("h100", "a100", "h200"):
        p = rp(gpu=gpu)
        t = p.iteration_s(decode(1))
        weights_s = weights_bytes_per_gpu(p.model, p.parallel) / GPUS[gpu].hbm_bytes_per_s
        flops_s = p.model.flops_per_token(1000) / GPUS[gpu].bf16_flops
        # the step overhead (1 ms) plus kernels reading weights at 60-90 % of peak bandwidth
        # (the H200's measured layer at batch 1 streams them at about 70 %)
        assert weights_s < t < 1.6 * weights_s + p.coeffs.per_iteration_overhead_s, gpu
        assert flops_s < 0.01 * t
        # memory bound: 8 sequences cost hardly more than 1
        assert p.iteration_s(decode(8)) < 1.1 * t


def test_prefill_is_compute_bound():
    p = rp()
    t = p.iteration_s(prefill(4096))
    flops_s = 4096 * p.model.flops_per_token(2048) / GPUS["h100"].bf16_flops
    assert flops_s < t < 2 * flops_s


def test_h200_beats_h100_on_decode_and_h100_beats_a100():
    for model, tp in (("llama-3-8b", 1), ("llama-3-70b", 4), ("mixtral-8x7b", 2)):
        h100, h200, a100 = (rp(model, g, tp=tp) for g in ("h100", "h200", "a100"))
        for b in (decode(1), decode(64)):
            assert h200.iteration_s(b) < h100.iteration_s(b) < a100.iteration_s(b)
        assert h100.iteration_s(prefill(2048)) < a100.iteration_s(prefill(2048))


def test_moe_reads_only_routed_experts():
    mix = rp("mixtral-8x7b", tp=2)
    t1, t64 = mix.iteration_s(decode(1)), mix.iteration_s(decode(64))
    w = weights_bytes_per_gpu(mix.model, mix.parallel) / GPUS["h100"].hbm_bytes_per_s
    # batch 1 reads 2 of 8 experts, batch 64 nearly all; the grouped expert matmuls reach
    # only about 60 % of the HBM bandwidth (the H200's MoE profiles), so batch 1 still
    # takes over half the time of reading every weight at the peak
    assert t1 < 0.85 * w < t64
    ep = rp("mixtral-8x7b", tp=2, ep=2)
    assert ep.iteration_s(decode(64)) > 0


def test_moe_block_priced_with_grouped_matmul_coefficients():
    """A MoE layer's linear time is its dense ops plus the MoE block's parts (router,
    routing, the grouped expert matmuls, combine; the activation is with the element-wise
    ops), the experts priced with the family's ``moe_gemm`` (the H100's borrowed from the
    H200), and a family without them (the A100) prices them as dense matmuls."""
    import dataclasses

    from control_plane.perf.ops import gemm_s

    mix = rp("mixtral-8x7b", tp=2)
    parts = mix.moe_parts(64)
    assert set(parts) == {"router", "route", "up", "act", "down", "combine"}
    assert all(v > 0 for v in parts.values())
    assert mix.layer_linear_s(64) == pytest.approx(
        mix._ew_const + mix._ew_slope * 64
        + sum(gemm_s(64, k, n, mix.gpu, mix.fc.gemm) for _, (k, n) in mix._shapes)
        + sum(v for k, v in parts.items() if k != "act"))
    assert mix.fc.moe_gemm is not None and mix.fc.moe_gemm == COEFFS.families["h200"].moe_gemm
    # priced as dense matmuls, the experts come out faster: what the MoE profiles refute
    fams = dict(COEFFS.families)
    fams["h100"] = dataclasses.replace(fams["h100"], moe_gemm=None)
    as_dense = RooflinePredictor("mixtral-8x7b", "h100", ParallelConfig(tp=2),
                                 dataclasses.replace(COEFFS, families=fams))
    for seqs in (1, 16, 256):
        assert as_dense.iteration_s(decode(seqs)) < mix.iteration_s(decode(seqs))
    assert COEFFS.families["a100"].moe_gemm is None
    a100 = rp("mixtral-8x7b", gpu="a100", tp=2)
    hit = 8 * (1 - (1 - 2 / 8) ** 8)  # experts hit by 8 tokens routed to 2 of 8 each
    assert a100.moe_parts(8)["up"] == pytest.approx(
        gemm_s(8 * 2, 4096, 2 * 14336 / 2, a100.gpu, a100.fc.gemm, copies=hit))
    assert rp("llama-3-8b").moe_parts(8) == {}


def test_context_and_attention_cost_time():
    p = rp()
    assert p.iteration_s(decode(32, 4000)) > p.iteration_s(decode(32, 1000))
    assert (p.iteration_s(Batch(prefill_tokens=1024, prefill_attention=1024 * 8192))
            > p.iteration_s(prefill(1024)))
    assert p.iteration_s(Batch()) == 0.0 and p.breakdown(Batch()) == {}


def test_pipeline_parallel_adds_sends_and_node_crossings():
    one, two = rp(), rp(pp=2)
    b = prefill(2048)
    assert two.iteration_s(b) > one.iteration_s(b)
    assert two.breakdown(b)["pp_comm"] > 0 and one.breakdown(b)["pp_comm"] == 0
    intra = rp("llama-3-70b", tp=4, pp=2).breakdown(b)["pp_comm"]
    inter = rp("llama-3-70b", tp=8, pp=2).breakdown(b)["pp_comm"]  # 16 GPUs: 2 nodes
    assert inter > intra


def test_invalid_setups_raise():
    with pytest.raises(ValueError, match="no NVLink"):
        rp(gpu="l40s", tp=2, interconnect="nvlink")
    with pytest.raises(ValueError, match="across nodes"):
        rp(tp=16)
    with pytest.raises(ValueError, match="interconnect"):
        rp(tp=2, interconnect="infiniband")
    assert rp(gpu="l40s", tp=2).interconnect == "pcie"


def test_breakdown_sums_to_iteration_and_layers_match_ops():
    p = rp("llama-3-70b", tp=4, pp=2)
    b = Batch(prefill_tokens=300, prefill_attention=300 * 900, decode_seqs=20,
              decode_context=20 * 3000)
    assert sum(p.breakdown(b).values()) == pytest.approx(p.iteration_s(b), rel=1e-12)
    for tokens in (1, 37, 4096):
        ops = layer_op_times(p.model, 4, tokens, p.gpu, p.fc)
        assert p.layer_linear_s(tokens) == pytest.approx(sum(ops[o] for o in LAYER_OPS),
                                                          rel=1e-12)


CASES = [("llama-3-8b", "h100", {}), ("llama-3-70b", "a100", {"tp": 4, "pp": 2}),
         ("mixtral-8x7b", "h200", {"tp": 2, "ep": 2}), ("qwen2.5-7b", "l40s", {"tp": 2})]


@pytest.mark.parametrize(("model", "gpu", "par"), CASES)
@pytest.mark.parametrize(("seqs", "ctx", "steps"), [(1, 10, 1), (7, 3500, 64), (256, 10**6, 500)])
def test_decode_run_equals_sum_of_iterations(model, gpu, par, seqs, ctx, steps):
    p = rp(model, gpu, **par)
    step_sum = math.fsum(p.iteration_s(Batch(decode_seqs=seqs, decode_context=ctx + i * seqs))
                         for i in range(steps))
    assert p.decode_run_s(seqs, ctx, steps) == pytest.approx(step_sum, rel=1e-9)
    assert p.decode_run_s(seqs, ctx, 0) == 0.0 and p.decode_run_s(0, 0, 10) == 0.0


def test_deterministic():
    b = Batch(prefill_tokens=512, prefill_attention=512 * 512, decode_seqs=9,
              decode_context=9000)
    a1 = [rp(m, g, **par).iteration_s(b) for m, g, par in CASES]
    a2 = [rp(m, g, **par).iteration_s(b) for m, g, par in CASES]
    assert a1 == a2
    assert repr(rp()) == "RooflinePredictor(llama-3-8b, h100, tp1-pp1-dp1, nvlink)"


def test_every_builtin_model_and_gpu_predicts():
    for name, m in MODELS.items():
        for gpu in GPUS:
            tp = 8 if m.params > 30e9 else 1
            if m.heads % tp:
                tp = 4
            t = rp(name, gpu, tp=tp).iteration_s(decode(16))
            assert 0 < t < 1.0, (name, gpu)
