"""Enumerate the (TP, PP, DP, EP) configurations of a GPU budget; vLLM flags for one.

For ``gpus`` GPUs of one type, ``gpus_per_node`` per node:

- TP (tensor parallel): powers of two up to ``min(gpus, gpus_per_node)`` (TP stays inside a
  node: its all-reduce runs twice per layer) that divide the attention heads and divide or
  are a multiple of the KV heads (:func:`~control_plane.perf.check_parallel`);
- PP (pipeline parallel): divisors of the layer count with ``tp * pp <= gpus`` (equal
  stages; vLLM would accept uneven ones, the planner does not propose them);
- DP (data parallel): replicas, ``dp = gpus // (tp * pp)``: as many as the budget holds
  (``gpus - tp * pp * dp`` GPUs stay idle when ``tp * pp`` does not divide the budget);
- EP (expert parallel, MoE only): vLLM's ``--enable-expert-parallel`` spreads each MoE
  layer's experts over all ``tp * dp`` ranks, so ``ep`` is 1 or ``tp * dp`` (when that
  divides the number of experts).
"""

from __future__ import annotations

from control_plane.errors import ValidationError
from control_plane.perf.models import ModelSpec
from control_plane.perf.parallel import ParallelConfig, check_parallel

__all__ = ["enumerate_configs", "vllm_flags"]

VLLM_DEFAULT_GPU_MEMORY_UTILIZATION = 0.9


def _valid(model: ModelSpec, par: ParallelConfig) -> bool:
    try:
        check_parallel(model, par)
    except ValidationError:
        return False
    return True


def enumerate_configs(model: ModelSpec, gpus: int, gpus_per_node: int = 8
                      ) -> list[ParallelConfig]:
    """Every configuration the rules above allow, ordered by (GPUs per replica, TP, PP, EP).
    Memory is not checked here (see :mod:`~control_plane.parallelism.estimate`)."""
    if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 1:
        raise ValidationError("plan", "gpus", gpus, "must be an integer >= 1")
    if isinstance(gpus_per_node, bool) or not isinstance(gpus_per_node, int) or gpus_per_node < 1:
        raise ValidationError("plan", "gpus_per_node", gpus_per_node, "must be an integer >= 1")
    out = []
    tp = 1
    while tp <= min(gpus, gpus_per_node):
        for pp in range(1, gpus // tp + 1):
            if model.layers % pp:
                continue
            dp = gpus // (tp * pp)
            eps = [1]
            if model.is_moe and tp * dp > 1 and model.n_experts % (tp * dp) == 0:
                eps.append(tp * dp)
            for ep in eps:
                par = ParallelConfig(tp=tp, pp=pp, dp=dp, ep=ep)
                if _valid(model, par):
                    out.append(par)
        tp *= 2
    out.sort(key=lambda p: (p.tp * p.pp, p.tp, p.pp, p.ep))
    return out


def vllm_flags(parallel: ParallelConfig,
               gpu_memory_utilization: float = VLLM_DEFAULT_GPU_MEMORY_UTILIZATION
               ) -> list[str]:
    """``vllm serve`` arguments for ``parallel``: the three sizes always, then
    ``--enable-expert-parallel`` when ``ep > 1`` and ``--gpu-memory-utilization`` when it
    differs from vLLM's default 0.9 (the memory model assumed it)."""
    flags = ["--tensor-parallel-size", str(parallel.tp),
             "--pipeline-parallel-size", str(parallel.pp),
             "--data-parallel-size", str(parallel.dp)]
    if parallel.ep > 1:
        flags.append("--enable-expert-parallel")
    if gpu_memory_utilization != VLLM_DEFAULT_GPU_MEMORY_UTILIZATION:
        flags += ["--gpu-memory-utilization", f"{gpu_memory_utilization:g}"]
    return flags
