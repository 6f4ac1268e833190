"""GPU memory of a replica: weights per GPU and KV-cache capacity in tokens.

Weights per GPU are those of the fullest pipeline stage: ``ceil(layers / pp)`` layers with
attention and dense MLP sharded ``tp`` ways, MoE experts sharded ``max(tp, ep)`` ways, the
vocabulary-parallel embedding and LM head sharded ``tp`` ways (both on one GPU when
``pp = 1``, else on the first and last stage). KV bytes per token per GPU::

    2 * ceil(layers / pp) * max(1, kv_heads / tp) * head_dim * dtype_bytes

KV capacity of a replica (tokens, the same on every GPU of it)::

    floor((memory * gpu_memory_utilization - weights_per_gpu - reserve) / kv_per_token_per_gpu)

``reserve_bytes`` stands for what vLLM holds besides weights and KV blocks: peak
activations of a ``max_num_batched_tokens`` forward pass, CUDA graphs, NCCL buffers
(default 2 GB; set it from a measured ``gpu_memory_utilization`` profile when known).
"""

from __future__ import annotations

import math

from control_plane.perf.hardware import GPUSpec
from control_plane.perf.models import ModelSpec
from control_plane.perf.parallel import ParallelConfig, check_parallel, kv_heads_per_gpu

__all__ = ["DEFAULT_RESERVE_BYTES", "kv_bytes_per_token_per_gpu", "kv_capacity_tokens",
           "weights_bytes_per_gpu"]

DEFAULT_RESERVE_BYTES = 2e9


def weights_bytes_per_gpu(model: ModelSpec, parallel: ParallelConfig) -> float:
    """Weight bytes on the fullest GPU of a replica."""
    check_parallel(model, parallel)
    tp, pp = parallel.tp, parallel.pp
    layer = (model.attention_params_per_layer + 2 * model.hidden) / tp
    if model.is_moe:
        layer += model.n_experts * model.expert_params / max(tp, parallel.ep)
        layer += model.hidden * model.n_experts  # router, replicated
    else:
        layer += model.expert_params / tp
    table = model.vocab * model.hidden / tp
    tables = (table if model.tie_embeddings else 2 * table) if pp == 1 else table
    params = math.ceil(model.layers / pp) * layer + tables + model.hidden
    return params * model.dtype_bytes


def kv_bytes_per_token_per_gpu(model: ModelSpec, parallel: ParallelConfig) -> float:
    layers = math.ceil(model.layers / parallel.pp)
    return 2 * layers * kv_heads_per_gpu(model, parallel.tp) * model.head_dim * model.dtype_bytes


def kv_capacity_tokens(model: ModelSpec, gpu: GPUSpec, parallel: ParallelConfig,
                       gpu_memory_utilization: float = 0.9,
                       reserve_bytes: float = DEFAULT_RESERVE_BYTES) -> int:
    """Tokens of KV cache one replica holds. ValueError (with the figures) if the weights
    and reserve do not fit in ``memory * gpu_memory_utilization``."""
    if not 0 < gpu_memory_utilization <= 1:
        raise ValueError(f"gpu_memory_utilization={gpu_memory_utilization!r}: must be in (0, 1]")
    if reserve_bytes < 0:
        raise ValueError(f"reserve_bytes={reserve_bytes!r}: must be >= 0")
    weights = weights_bytes_per_gpu(model, parallel)
    budget = gpu.memory_bytes * gpu_memory_utilization
    free = budget - weights - reserve_bytes
    if free <= 0:
        raise ValueError(
            f"{model.name} on {gpu.name} ({parallel}) does not fit: weights "
            f"{weights / 1e9:.1f} GB + reserve {reserve_bytes / 1e9:.1f} GB > "
            f"{gpu.memory_bytes / 1e9:.0f} GB x {gpu_memory_utilization} per GPU")
    return int(free // kv_bytes_per_token_per_gpu(model, parallel))
