"""Settings of one modelled engine, and what one planned stretch of iterations produced."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

__all__ = ["EngineConfig", "StepOutcome"]


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """vLLM engine settings that shape scheduling. ``num_gpu_blocks``: KV capacity in
    blocks of ``block_size`` tokens (GPU memory minus weights, activations and reserve,
    divided by the bytes of one block: computed by the caller). ``hash_block_size``: tokens
    per hash of ``Request.prefix_hashes`` (None: ``block_size``; 512 for Mooncake traces)."""

    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    block_size: int = 16
    num_gpu_blocks: int = 16384
    enable_chunked_prefill: bool = True
    enable_prefix_caching: bool = True
    scheduling_policy: str = "fcfs"
    long_prefill_token_threshold: int = 0
    hash_block_size: int | None = None

    def __post_init__(self) -> None:
        for name in ("max_num_seqs", "max_num_batched_tokens", "block_size", "num_gpu_blocks"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"EngineConfig.{name}={v!r}: must be an integer >= 1")
        t = self.long_prefill_token_threshold
        if isinstance(t, bool) or not isinstance(t, int) or t < 0:
            raise ValueError(f"EngineConfig.long_prefill_token_threshold={t!r}: must be an "
                             "integer >= 0")
        h = self.hash_block_size
        if h is not None and (isinstance(h, bool) or not isinstance(h, int) or h < 1):
            raise ValueError(f"EngineConfig.hash_block_size={h!r}: must be an integer >= 1")
        if self.scheduling_policy not in ("fcfs", "priority"):
            raise ValueError(f"EngineConfig.scheduling_policy={self.scheduling_policy!r}: "
                             "must be 'fcfs' or 'priority'")

    @property
    def kv_capacity_tokens(self) -> int:
        return self.num_gpu_blocks * self.block_size


class StepOutcome(NamedTuple):
    """What one planned stretch (one iteration, or ``steps`` fast-forwarded ones) produced.

    ``first_tokens``: (request id, time) of requests that got their first token.
    ``finished``: (request id, time, output tokens, cached prompt tokens, preemptions).
    """

    start_s: float
    end_s: float
    steps: int
    first_tokens: list[tuple[str, float]]
    finished: list[tuple[str, float, int, int, int]]

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s
