"""Engine and cost settings the planner assumes (vLLM defaults unless set)."""

from __future__ import annotations

from dataclasses import dataclass

from control_plane.errors import ValidationError
from control_plane.perf.memory import DEFAULT_RESERVE_BYTES

__all__ = ["PlanOptions"]


@dataclass(frozen=True, slots=True)
class PlanOptions:
    """``gpu_memory_utilization``: fraction of GPU memory vLLM may use (its default 0.9);
    ``reserve_bytes``: activations, CUDA graphs, NCCL buffers per GPU (bytes);
    ``max_num_seqs``: most sequences one replica runs at once (vLLM default 256);
    ``max_num_batched_tokens``: token budget of one iteration, prefill chunks included
    (chunked prefill; vLLM's default on large GPUs is 8192);
    ``interconnect``: ``"nvlink"`` / ``"pcie"`` for TP, None = NVLink when the GPU has it;
    ``price_per_gpu_hour``: USD per GPU-hour, None = ``GPUSpec.price_per_hour_usd``."""

    gpu_memory_utilization: float = 0.9
    reserve_bytes: float = DEFAULT_RESERVE_BYTES
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    interconnect: str | None = None
    price_per_gpu_hour: float | None = None

    def __post_init__(self) -> None:
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ValidationError("PlanOptions", "gpu_memory_utilization",
                                  self.gpu_memory_utilization, "must be in (0, 1]")
        if not self.reserve_bytes >= 0:
            raise ValidationError("PlanOptions", "reserve_bytes", self.reserve_bytes,
                                  "must be >= 0")
        for f in ("max_num_seqs", "max_num_batched_tokens"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValidationError("PlanOptions", f, v, "must be an integer >= 1")
        if self.interconnect not in (None, "nvlink", "pcie"):
            raise ValidationError("PlanOptions", "interconnect", self.interconnect,
                                  "must be 'nvlink', 'pcie' or None")
        if self.price_per_gpu_hour is not None and not self.price_per_gpu_hour >= 0:
            raise ValidationError("PlanOptions", "price_per_gpu_hour",
                                  self.price_per_gpu_hour, "must be >= 0 or None")
