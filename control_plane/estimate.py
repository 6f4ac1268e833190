"""Latency estimates the control plane uses for SLO feasibility and cost-aware choices.

Nominal model until a performance model (``control_plane.perf``) is plugged in:
TTFT on an instance = (this prompt + the prompt tokens the engine still has waiting) /
``prefill_tokens_per_s``; the waiting share is the engine-reported waiting fraction. Time per
output token = the observed decaying average when the instance has completed requests,
else the spec's nominal ``decode_s_per_token``.
"""

from __future__ import annotations

from control_plane.types import InstanceView, Request

__all__ = ["estimate_e2e_s", "estimate_tpot_s", "estimate_ttft_s"]


def estimate_ttft_s(request: Request, v: InstanceView) -> float:
    spec = v.spec
    backlog = 0.0
    total = v.engine_running + v.engine_waiting
    if total:
        backlog = v.inflight_prompt_tokens * (v.engine_waiting / total)
    return (request.prompt_tokens + backlog) / spec.prefill_tokens_per_s


def estimate_tpot_s(v: InstanceView) -> float:
    per = v.ewma_s_per_output_token
    return v.spec.decode_s_per_token if per is None else per


def estimate_e2e_s(request: Request, v: InstanceView) -> float:
    return (estimate_ttft_s(request, v)
            + estimate_tpot_s(v) * max(0, request.expected_output_tokens - 1))
