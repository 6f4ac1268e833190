"""Small builders for requests, specs and cluster states used across the tests."""

from __future__ import annotations

from control_plane.cluster import ClusterState
from control_plane.types import SLO, EngineStats, Health, InstanceSpec, Request


def req(rid: str = "r0", arrival: float = 0.0, prompt: int = 100, output: int = 10,
        priority: int = 2, tenant: str = "default", session: str | None = None,
        prefix: tuple[int, ...] = (), ttft: float | None = None, tpot: float | None = None,
        e2e: float | None = None, budget: float | None = None) -> Request:
    slo = SLO(ttft, tpot, e2e) if (ttft or tpot or e2e) else None
    return Request(rid, arrival, prompt, output_tokens=output, priority=priority,
                   tenant=tenant, session_id=session, prefix_hashes=prefix, slo=slo,
                   cost_budget_usd=budget)


def specs(n: int = 4, **kw) -> list[InstanceSpec]:
    return [InstanceSpec(f"i{k}", **kw) for k in range(n)]


def cluster(n: int = 4, **kw) -> ClusterState:
    return ClusterState(specs(n, **kw))


def load(state: ClusterState, instance_id: str, *requests: Request) -> None:
    """Mark requests as in flight on an instance (own bookkeeping)."""
    v = state[instance_id]
    for r in requests:
        state.dispatched(v, r)


def observe(state: ClusterState, instance_id: str, now: float = 0.0, running: int = 0,
            waiting: int = 0, kv: float = 0.0) -> None:
    state.observed(state[instance_id], EngineStats(running, waiting, kv), now)


def down(state: ClusterState, instance_id: str, health: Health = Health.DOWN) -> None:
    state.set_health(state[instance_id], health)
