"""Memory per GPU of one configuration, from :mod:`control_plane.perf.memory`.

Per GPU (bytes), on the fullest pipeline stage::

    weights  = ceil(layers / pp) * (attention / tp + experts * expert / max(tp, ep) [MoE]
                                    or mlp / tp [dense]) + embedding tables / tp
    experts  = ceil(layers / pp) * n_experts * 3 * hidden * intermediate / max(tp, ep) * b
    kv/token = 2 * ceil(layers / pp) * max(1, kv_heads / tp) * head_dim * b
    KV tokens of a replica = (memory * gpu_memory_utilization - weights - reserve) / kv/token

A configuration fits when the weights and reserve fit (else the reason is the perf module's
message, e.g. "... weights 141.1 GB + reserve 2.0 GB > 80 GB x 0.9 per GPU") and the KV
cache holds the workload's longest request (vLLM refuses to start otherwise).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from control_plane.perf.hardware import GPUSpec
from control_plane.perf.memory import (
    kv_bytes_per_token_per_gpu,
    kv_capacity_tokens,
    weights_bytes_per_gpu,
)
from control_plane.perf.models import ModelSpec
from control_plane.perf.parallel import ParallelConfig

__all__ = ["MemoryEstimate", "estimate_memory"]


@dataclass(frozen=True, slots=True)
class MemoryEstimate:
    """Bytes per GPU and KV tokens per replica; ``reason`` is None when it fits."""

    weights_bytes_per_gpu: float
    expert_bytes_per_gpu: float
    kv_bytes_per_token_per_gpu: float
    kv_tokens: int
    fits: bool
    reason: str | None


def estimate_memory(model: ModelSpec, gpu: GPUSpec, parallel: ParallelConfig,
                    longest_request_tokens: int, gpu_memory_utilization: float = 0.9,
                    reserve_bytes: float = 2e9) -> MemoryEstimate:
    """Memory of ``parallel`` and whether it fits a request of ``longest_request_tokens``."""
    weights = weights_bytes_per_gpu(model, parallel)
    stage_layers = math.ceil(model.layers / parallel.pp)
    experts = (stage_layers * model.n_experts * model.expert_params
               / max(parallel.tp, parallel.ep) * model.dtype_bytes if model.is_moe else 0.0)
    per_token = kv_bytes_per_token_per_gpu(model, parallel)
    try:
        kv = kv_capacity_tokens(model, gpu, parallel, gpu_memory_utilization, reserve_bytes)
    except ValueError as exc:
        return MemoryEstimate(weights, experts, per_token, 0, False, str(exc))
    if kv < longest_request_tokens:
        return MemoryEstimate(weights, experts, per_token, kv, False,
                              f"KV cache holds {kv:,} tokens < the longest request "
                              f"({longest_request_tokens:,} tokens)")
    return MemoryEstimate(weights, experts, per_token, kv, True, None)
