"""ClusterState: the single writer of InstanceView / ClusterView snapshots.

The manager calls these methods as events arrive; policies and routers only read the views.
Each update is O(1) except a change of health, which also drops the cached candidate tuples.
With the TPOT admission gate on (``tpot_gate``, :mod:`control_plane.gate`) a dispatch or a
release also updates the instance's tightest in-flight TPOT SLO (a count per distinct bound:
O(distinct bounds) when the tightest one leaves) and its predicted time per output token.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from control_plane.errors import UnknownInstanceError, ValidationError
from control_plane.gate import predicted_tpot_s
from control_plane.types import (
    NUM_PRIORITIES,
    ClusterView,
    EngineStats,
    Health,
    InstanceSpec,
    InstanceView,
    Request,
    _set,
)

__all__ = ["ClusterState"]

_EWMA_ALPHA = 0.2  # weight of the newest sample in the decaying latency averages


class ClusterState:
    """Owns the views; enforces per-instance limits (concurrency, KV headroom, and the TPOT
    gate when ``tpot_gate`` is set: see :mod:`control_plane.gate`)."""

    def __init__(self, specs: Iterable[InstanceSpec], *, kv_headroom: float = 0.95,
                 stats_stale_s: float | None = None, tpot_gate: float | None = None) -> None:
        specs = tuple(specs)
        if not specs:
            raise ValidationError("ClusterState", "instances", (), "needs at least one instance")
        seen: set[str] = set()
        for s in specs:
            if not isinstance(s, InstanceSpec):
                raise ValidationError("ClusterState", "instances", s, "must be InstanceSpec")
            if s.instance_id in seen:
                raise ValidationError("ClusterState", "instance_id", s.instance_id, "duplicate")
            seen.add(s.instance_id)
        if not 0.0 < kv_headroom <= 1.0:
            raise ValidationError("ClusterState", "kv_headroom", kv_headroom, "must be in (0, 1]")
        if tpot_gate is not None and (isinstance(tpot_gate, bool)
                                      or not isinstance(tpot_gate, (int, float))
                                      or not 0.0 < tpot_gate < math.inf):
            raise ValidationError("ClusterState", "tpot_gate", tpot_gate,
                                  "must be a number > 0 or None")
        self.kv_headroom = kv_headroom
        self.stats_stale_s = stats_stale_s
        self.tpot_gate = tpot_gate
        self.view = ClusterView(tuple(InstanceView(s, i) for i, s in enumerate(specs)))
        self._queued = [0] * NUM_PRIORITIES
        # per instance (by index): in-flight requests per distinct TPOT SLO bound (gate only)
        self._tpot_bounds: list[dict[float, int]] = [{} for _ in specs]

    # -- lookup -----------------------------------------------------------------------
    def __getitem__(self, instance_id: str) -> InstanceView:
        v = self.view.get(instance_id)
        if v is None:
            known = ", ".join(x.instance_id for x in self.view.instances)
            raise UnknownInstanceError(f"unknown instance {instance_id!r}; known: {known}")
        return v

    # -- room -------------------------------------------------------------------------
    def _room(self, v: InstanceView) -> bool:
        if v.inflight >= v.spec.max_inflight:
            return False
        if (v.spec.kv_capacity_tokens > 0 and v.observed_s is not None
                and v.est_kv_usage >= self.kv_headroom):
            return False
        gate = self.tpot_gate
        return gate is None or not v.inflight or v.next_tpot_s <= gate * v.tpot_bound_s

    def gate_admits(self, v: InstanceView, request: Request) -> bool:
        """Whether the TPOT gate lets ``request`` onto ``v`` given the request's own TPOT
        SLO (the in-flight requests' bounds are in ``has_room``). True when the gate is off,
        the request has no TPOT SLO or ``v`` runs nothing."""
        gate = self.tpot_gate
        if gate is None or not v.inflight:
            return True
        slo = request.slo
        return slo is None or slo.tpot_s is None or v.next_tpot_s <= gate * slo.tpot_s

    def _gate_update(self, v: InstanceView, request: Request, sign: int) -> None:
        """Fold a dispatch (+1) or release (-1) into the gate's figures of ``v``."""
        slo = request.slo
        if slo is not None and slo.tpot_s is not None:
            bounds = self._tpot_bounds[v.index]
            bound = slo.tpot_s
            left = bounds.get(bound, 0) + sign
            if left:
                bounds[bound] = left
            else:
                del bounds[bound]
            if sign > 0:
                if bound < v.tpot_bound_s:
                    _set(v, "tpot_bound_s", bound)
            elif not left and bound == v.tpot_bound_s:
                _set(v, "tpot_bound_s", min(bounds) if bounds else math.inf)
        n = v.inflight
        if n:
            per = v.prefill_per_step + sign * request.prompt_tokens / max(
                1, request.expected_output_tokens)
        else:
            per = 0.0  # nothing in flight: no rounding residue carried over
        _set(v, "prefill_per_step", per)
        _set(v, "next_tpot_s", predicted_tpot_s(v.spec, n + 1, per * (n + 1) / n)
             if n else predicted_tpot_s(v.spec, 1, 0.0))

    def _refresh_room(self, v: InstanceView) -> None:
        room = self._room(v)
        if room is not v.has_room:
            _set(v, "has_room", room)
            if v.health is Health.UP:
                _set(self.view, "_candidates", None)

    # -- events -----------------------------------------------------------------------
    def dispatched(self, v: InstanceView, request: Request) -> None:
        tokens = request.prompt_tokens + request.expected_output_tokens
        _set(v, "inflight", v.inflight + 1)
        _set(v, "inflight_tokens", v.inflight_tokens + tokens)
        _set(v, "inflight_prompt_tokens", v.inflight_prompt_tokens + request.prompt_tokens)
        _set(v, "dispatched_total", v.dispatched_total + 1)
        _set(v, "kv_tokens_since_observed", v.kv_tokens_since_observed + tokens)
        if self.tpot_gate is not None:
            self._gate_update(v, request, 1)
            if v.has_room:
                self._refresh_room(v)
        elif v.has_room and (v.inflight >= v.spec.max_inflight or v.spec.kv_capacity_tokens):
            self._refresh_room(v)

    def released(self, v: InstanceView, request: Request) -> None:
        tokens = request.prompt_tokens + request.expected_output_tokens
        _set(v, "inflight", v.inflight - 1)
        _set(v, "inflight_tokens", v.inflight_tokens - tokens)
        _set(v, "inflight_prompt_tokens", v.inflight_prompt_tokens - request.prompt_tokens)
        if self.tpot_gate is not None:
            self._gate_update(v, request, -1)
            self._refresh_room(v)
        elif not v.has_room:
            self._refresh_room(v)

    def observed(self, v: InstanceView, stats: EngineStats, now: float) -> None:
        _set(v, "engine_running", stats.running)
        _set(v, "engine_waiting", stats.waiting)
        _set(v, "engine_kv_usage", stats.kv_usage)
        _set(v, "observed_s", now)
        _set(v, "kv_tokens_since_observed", 0)
        self._refresh_room(v)

    def expire_stats(self, now: float) -> None:
        """Forget engine stats older than ``stats_stale_s`` (own bookkeeping remains)."""
        if self.stats_stale_s is None:
            return
        for v in self.view.instances:
            if v.observed_s is not None and now - v.observed_s > self.stats_stale_s:
                _set(v, "engine_running", 0)
                _set(v, "engine_waiting", 0)
                _set(v, "engine_kv_usage", 0.0)
                _set(v, "observed_s", None)
                _set(v, "kv_tokens_since_observed", 0)
                self._refresh_room(v)

    def latency(self, v: InstanceView, ttft_s: float | None, e2e_s: float | None,
                output_tokens: int | None) -> None:
        """Fold one completed request's latencies into the decaying averages."""
        a = _EWMA_ALPHA
        if ttft_s is not None:
            old = v.ewma_ttft_s
            _set(v, "ewma_ttft_s", ttft_s if old is None else old + a * (ttft_s - old))
        if e2e_s is not None:
            old = v.ewma_e2e_s
            _set(v, "ewma_e2e_s", e2e_s if old is None else old + a * (e2e_s - old))
            if ttft_s is not None and output_tokens and output_tokens > 1:
                per = max(0.0, e2e_s - ttft_s) / (output_tokens - 1)
                old = v.ewma_s_per_output_token
                _set(v, "ewma_s_per_output_token", per if old is None else old + a * (per - old))

    def set_health(self, v: InstanceView, health: Health) -> bool:
        """Change health; True if it changed."""
        if v.health is health:
            return False
        _set(v, "health", health)
        _set(self.view, "_routable", None)
        _set(self.view, "_candidates", None)
        return True

    def queue_changed(self, priority: int, delta: int) -> None:
        q = self._queued
        q[priority] += delta
        _set(self.view, "queued", self.view.queued + delta)
        _set(self.view, "queued_by_priority", tuple(q))
