"""Parallel configuration of a deployment: tensor, pipeline, data and expert parallelism.

One *replica* (an engine instance) spans ``tp * pp`` GPUs; ``dp`` replicas serve
independently, so a deployment uses ``tp * pp * dp`` GPUs. Expert parallelism follows vLLM
(``--enable-expert-parallel``): the experts of each MoE layer are split over ``ep`` GPUs
drawn from the TP (and DP) ranks, so ``ep`` must divide ``tp * dp``; with ``ep = 1`` the
experts are tensor-parallel like a dense MLP.

:func:`check_parallel` adds the model-dependent rules vLLM enforces: attention heads
divisible by TP; KV heads divisible by TP or TP a multiple of them (then KV heads are
replicated); at least one layer per pipeline stage; experts divisible by EP.
"""

from __future__ import annotations

from dataclasses import dataclass

from control_plane.errors import ValidationError
from control_plane.perf.models import ModelSpec

__all__ = ["ParallelConfig", "check_parallel"]


@dataclass(frozen=True, slots=True)
class ParallelConfig:
    tp: int = 1
    pp: int = 1
    dp: int = 1
    ep: int = 1

    def __post_init__(self) -> None:
        for f in ("tp", "pp", "dp", "ep"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValidationError("ParallelConfig", f, v, "must be an integer >= 1")
        if (self.tp * self.dp) % self.ep:
            raise ValidationError("ParallelConfig", "ep", self.ep,
                                  f"must divide tp*dp={self.tp * self.dp} (EP groups are "
                                  "formed from the TP and DP ranks)")

    @property
    def gpus_per_replica(self) -> int:
        return self.tp * self.pp

    @property
    def total_gpus(self) -> int:
        return self.tp * self.pp * self.dp

    def __str__(self) -> str:
        return f"tp{self.tp}-pp{self.pp}-dp{self.dp}" + (f"-ep{self.ep}" if self.ep > 1 else "")


def check_parallel(model: ModelSpec, parallel: ParallelConfig) -> None:
    """Raise ValidationError when ``model`` cannot be split as ``parallel`` says."""
    tp, pp, ep = parallel.tp, parallel.pp, parallel.ep
    if model.heads % tp:
        raise ValidationError("ParallelConfig", "tp", tp,
                              f"must divide {model.name}'s {model.heads} attention heads")
    if model.kv_heads % tp and tp % model.kv_heads:
        raise ValidationError("ParallelConfig", "tp", tp,
                              f"must divide or be a multiple of {model.name}'s "
                              f"{model.kv_heads} KV heads")
    if pp > model.layers:
        raise ValidationError("ParallelConfig", "pp", pp,
                              f"exceeds {model.name}'s {model.layers} layers")
    if ep > 1 and not model.is_moe:
        raise ValidationError("ParallelConfig", "ep", ep, f"{model.name} is not a MoE model")
    if model.n_experts % ep:
        raise ValidationError("ParallelConfig", "ep", ep,
                              f"must divide {model.name}'s {model.n_experts} experts")


def kv_heads_per_gpu(model: ModelSpec, tp: int) -> int:
    """KV heads each GPU stores: ``kv_heads / tp``, at least 1 (replicated when tp > kv)."""
    return max(1, model.kv_heads // tp)
