"""Operator-level time formulas shared by the roofline predictor and the fitting tool.

Every function is plain arithmetic, so ``tokens`` may be a float or a numpy array (the
fitting tool evaluates thousands of profile rows at once with the same code the predictor
runs). Units: seconds, bytes, FLOPs; ``P`` = ``gpu.bf16_flops``, ``W`` =
``gpu.hbm_bytes_per_s``.

Matmul (GEMM) of ``tokens x k`` by ``k x n`` weights, ``b`` bytes per element::

    F = 2 * tokens * k * n                         FLOPs
    B = b * (copies * k * n + tokens * (k + n))    bytes: weights read once + activations
    t = launch_s + ((F / (P * eff_compute))**p + (B / (W * eff_mem))**p) ** (1 / p)

The last term is a *smooth roofline*: p -> infinity gives max(compute, memory); the fitted
p (about 1.2-1.4) also captures the partial overlap of the two near the ridge point. It is
homogeneous of degree 1, so attention decode time is exactly linear in the KV context.

Element-wise op moving ``B`` bytes: ``t = launch_s + B / (W * eff_mem)``.

Collectives on a message of ``S`` bytes over ``n`` GPUs, bandwidth ``bw`` = ``eff`` x the
link's per-direction bandwidth (or a fitted absolute ``bytes_per_s``)::

    all_reduce: t = alpha_s + 2 * (n - 1) / n * S / bw      (ring; bw is the bus bandwidth)
    send_recv:  t = alpha_s + S / bw

The layer's ops and their names are those of Vidur's operator profiles: ``attn_pre_proj``
(QKV), ``attn_post_proj`` (O), ``mlp_up_proj`` (gate+up), ``mlp_down_proj``,
``input_layernorm``, ``post_attention_layernorm``, ``attn_rope``, ``mlp_act`` and one
``add`` per layer, as in Vidur's block time. Nominal bytes per token (``h`` hidden, ``hq``
and ``kvg`` query and KV heads per GPU, ``d`` head_dim, ``i`` MLP width per GPU)::

    layernorm 2*b*h   rope 2*b*(hq + kvg)*d   act 3*b*i   add 3*b*h   emb 2*b*h

The fitted ``eff_mem`` of an element-wise op is relative to these nominal bytes; it may
exceed 1 (``add``: the profiler re-runs the op on tensors that stay in L2 at small sizes).
"""

from __future__ import annotations

from control_plane.perf.coefficients import ElementwiseCoeffs, FamilyCoeffs, GemmCoeffs, LinkCoeffs
from control_plane.perf.hardware import GPUSpec
from control_plane.perf.models import ModelSpec
from control_plane.perf.parallel import kv_heads_per_gpu

__all__ = ["ELEMENTWISE_OPS", "GEMM_OPS", "LAYER_OPS", "comm_s", "comm_terms",
           "elementwise_bytes_per_token", "elementwise_s", "experts_hit", "gemm_s",
           "gemm_shapes", "layer_op_times", "roof_s"]

GEMM_OPS = ("attn_pre_proj", "attn_post_proj", "mlp_up_proj", "mlp_down_proj")
ELEMENTWISE_OPS = ("input_layernorm", "attn_rope", "post_attention_layernorm", "mlp_act", "add")
LAYER_OPS = GEMM_OPS + ELEMENTWISE_OPS


def roof_s(flops, bytes_, gpu: GPUSpec, c: GemmCoeffs):
    """Smooth roofline time (no launch cost) of ``flops`` FLOPs over ``bytes_`` bytes."""
    p = c.smooth_p
    compute = flops / (gpu.bf16_flops * c.eff_compute)
    memory = bytes_ / (gpu.hbm_bytes_per_s * c.eff_mem)
    return (compute ** p + memory ** p) ** (1.0 / p)


def gemm_s(tokens, k: float, n: float, gpu: GPUSpec, c: GemmCoeffs, dtype_bytes: int = 2,
           copies: float = 1.0):
    """Seconds of one matmul kernel; ``copies``: weight matrices read (MoE experts hit)."""
    flops = 2.0 * tokens * k * n
    bytes_ = dtype_bytes * (copies * k * n + tokens * (k + n))
    return c.launch_s + roof_s(flops, bytes_, gpu, c)


def experts_hit(experts: float, share: float, draws):
    """Expected number of distinct experts, of ``experts``, that ``draws`` routings hit when
    each picks a given expert with probability ``share`` (top-k of n uniformly: k/n)."""
    return experts * (1.0 - (1.0 - share) ** draws)


def elementwise_s(bytes_, gpu: GPUSpec, c: ElementwiseCoeffs):
    return c.launch_s + bytes_ / (gpu.hbm_bytes_per_s * c.eff_mem)


def gemm_shapes(model: ModelSpec, tp: int) -> dict[str, tuple[float, float]]:
    """(k, n) per GPU of the dense layer's matmuls under ``tp``-way tensor parallelism."""
    h, d = model.hidden, model.head_dim
    hq, kvg = model.heads // tp, kv_heads_per_gpu(model, tp)
    i = model.intermediate / tp
    return {"attn_pre_proj": (h, (hq + 2 * kvg) * d), "attn_post_proj": (hq * d, h),
            "mlp_up_proj": (h, 2 * i), "mlp_down_proj": (i, h)}


def elementwise_bytes_per_token(model: ModelSpec, tp: int,
                                mlp_width: float | None = None) -> dict[str, float]:
    """Nominal bytes per token of the element-wise ops (``emb`` is per iteration)."""
    b, h, d = model.dtype_bytes, model.hidden, model.head_dim
    hq, kvg = model.heads // tp, kv_heads_per_gpu(model, tp)
    i = model.intermediate / tp if mlp_width is None else mlp_width
    return {"input_layernorm": 2 * b * h, "post_attention_layernorm": 2 * b * h,
            "attn_rope": 2 * b * (hq + kvg) * d, "mlp_act": 3 * b * i, "add": 3 * b * h,
            "emb": 2 * b * h}


def layer_op_times(model: ModelSpec, tp: int, tokens, gpu: GPUSpec,
                   fc: FamilyCoeffs) -> dict[str, object]:
    """Predicted seconds of each of one dense layer's non-attention ops (Vidur's op names)
    for ``tokens`` tokens, plus ``emb``; what the fitted errors are measured on."""
    out: dict[str, object] = {}
    for op, (k, n) in gemm_shapes(model, tp).items():
        out[op] = gemm_s(tokens, k, n, gpu, fc.gemm, model.dtype_bytes)
    for op, per_token in elementwise_bytes_per_token(model, tp).items():
        out[op] = elementwise_s(per_token * tokens, gpu, fc.elementwise[op])
    return out


def comm_terms(lc: LinkCoeffs, n: int, link_bytes_per_s: float,
               collective: str = "all_reduce") -> tuple[float, float]:
    """(alpha_s, seconds per message byte) of ``collective`` over ``n`` GPUs."""
    bw = lc.bytes_per_s or lc.eff * link_bytes_per_s
    if collective == "all_reduce":
        return lc.alpha_s, 2.0 * (n - 1) / n / bw
    if collective == "send_recv":
        return lc.alpha_s, 1.0 / bw
    raise ValueError(f"collective={collective!r}: must be 'all_reduce' or 'send_recv'")


def comm_s(size_bytes, n: int, lc: LinkCoeffs, link_bytes_per_s: float,
           collective: str = "all_reduce"):
    alpha, per_byte = comm_terms(lc, n, link_bytes_per_s, collective)
    return alpha + per_byte * size_bytes
