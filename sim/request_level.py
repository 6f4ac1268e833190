"""Request-level service model: latency of a request from its batch at dispatch time.

A fast, coarse model (no prefill/decode interference inside a step, like request-level
simulators such as vllm-sr-sim): on an instance already running ``b`` requests,

- time to first token = network delay + prompt_tokens / prefill_tokens_per_s
  x (1 + prefill_slowdown x b)
- time per output token = decode_s_per_token x (1 + decode_slowdown x b)

with the speeds from the instance's :class:`~control_plane.types.InstanceSpec`. The
iteration-level engine model (vLLM scheduler semantics, paged KV, chunked prefill) replaces
this where fidelity matters; this one is for quick policy comparisons and the CLI default.
"""

from __future__ import annotations

from dataclasses import dataclass

from control_plane.types import InstanceSpec, Request

__all__ = ["RequestLevelModel"]


@dataclass(frozen=True, slots=True)
class RequestLevelModel:
    prefill_slowdown: float = 0.05  # per request already running on the instance
    decode_slowdown: float = 0.03
    network_delay_s: float = 0.001  # gateway -> engine, each way

    def __post_init__(self) -> None:
        for name in ("prefill_slowdown", "decode_slowdown", "network_delay_s"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or v < 0:
                raise ValueError(f"RequestLevelModel.{name}={v!r}: must be a number >= 0")

    def ttft_s(self, request: Request, spec: InstanceSpec, running: int) -> float:
        return (self.network_delay_s + request.prompt_tokens / spec.prefill_tokens_per_s
                * (1.0 + self.prefill_slowdown * running))

    def tpot_s(self, spec: InstanceSpec, running: int) -> float:
        return spec.decode_s_per_token * (1.0 + self.decode_slowdown * running)
