"""ControlPlane: the sans-I/O state machine that both drivers (sim, live) call.

Every entry point takes ``now`` (seconds, from the driver's clock) and returns a list of
actions (:mod:`control_plane.actions`) for the driver to execute in order. The manager owns
the global queue's bounds and the in-flight bookkeeping; the queue policy orders the queue
and the router picks instances. A request is always in exactly one place: queued, in
flight, or finished (completed or rejected with a reason); the property test checks it.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from control_plane.actions import (
    OK,
    Dispatch,
    Outcome,
    PolicySwitch,
    Queued,
    Reject,
    RejectCause,
    Retry,
)
from control_plane.cluster import ClusterState
from control_plane.config import ControlPlaneConfig
from control_plane.errors import (
    ControlPlaneError,
    DuplicateRequestError,
    UnknownRequestError,
)
from control_plane.policies import QueuePolicy, create_policy
from control_plane.routing import Router, create_router
from control_plane.types import (
    NUM_PRIORITIES,
    ClusterView,
    EngineStats,
    Health,
    InstanceSpec,
    InstanceView,
    Request,
)

__all__ = ["Action", "ControlPlane", "ControlPlaneCounters"]

Action = Dispatch | Queued | Reject | Retry | PolicySwitch

_UP = Health.UP


@dataclass(slots=True)
class ControlPlaneCounters:
    """Running totals (exported as metrics by the drivers)."""

    submitted: int = 0
    dispatched: int = 0
    completed: int = 0
    failed: int = 0
    retried: int = 0
    rejected: dict[str, int] = field(default_factory=dict)


class ControlPlane:
    """Admission, global queueing and routing for a cluster of engine instances."""

    def __init__(self, instances: Iterable[InstanceSpec], policy: object = "fifo",
                 router: object = "round_robin",
                 config: ControlPlaneConfig | Mapping[str, object] | None = None) -> None:
        if not isinstance(config, ControlPlaneConfig):
            config = ControlPlaneConfig.from_dict(config)
        self.config = config
        self.state = ClusterState(instances, kv_headroom=config.kv_headroom,
                                  stats_stale_s=config.stats_stale_s,
                                  tpot_gate=config.tpot_gate)
        self.cluster: ClusterView = self.state.view
        self._policy = policy if isinstance(policy, QueuePolicy) else create_policy(policy)
        self._router = router if isinstance(router, Router) else create_router(router)
        self._rng = random.Random(config.seed)
        # request id -> (request, instance view, attempt, dispatch time)
        self._inflight: dict[str, tuple[Request, InstanceView, int, float]] = {}
        # per priority level: request id -> (request, enqueue time), in enqueue order
        self._queued: list[dict[str, tuple[Request, float]]] = [
            {} for _ in range(NUM_PRIORITIES)]
        self._nqueued = 0
        self._attempt: dict[str, int] = {}  # next attempt number of retried requests
        self._failed_on: dict[str, set[str]] = {}
        self._last_report: dict[str, float] = {}
        self._timed_out: set[str] = set()  # marked down by health timeout (auto-recover)
        self.counters = ControlPlaneCounters()
        self.switches: list[PolicySwitch] = []

    # -- introspection ----------------------------------------------------------------
    @property
    def policy(self) -> QueuePolicy:
        return self._policy

    @property
    def router(self) -> Router:
        return self._router

    def queued_ids(self) -> list[str]:
        return [rid for level in self._queued for rid in level]

    def inflight_ids(self) -> list[str]:
        return list(self._inflight)

    def instance_of(self, request_id: str) -> str | None:
        f = self._inflight.get(request_id)
        return None if f is None else f[1].instance_id

    def is_tracked(self, request_id: str) -> bool:
        return request_id in self._inflight or any(request_id in q for q in self._queued)

    # -- events -----------------------------------------------------------------------
    def submit(self, request: Request, now: float) -> list[Action]:
        """A new request arrives: dispatch it, queue it, or reject it with a reason."""
        rid = request.request_id
        if rid in self._inflight or (self._nqueued and self.is_tracked(rid)):
            raise DuplicateRequestError(f"request {rid!r} is already queued or in flight")
        self.counters.submitted += 1
        policy = self._policy
        rejection = policy.admit(request, self.cluster, now)
        if rejection is not None:
            return [self._reject(request, rejection[0], rejection[1], now)]
        if not self.cluster.routable:
            return [self._reject(request, RejectCause.NO_INSTANCES, self._no_instance_detail(),
                                 now)]
        if not self._nqueued and self.cluster.candidates:
            view = self._route(request, now)
            if view is not None:
                return [self._dispatch(request, view, 1, now)]
        return self._enqueue(request, now)

    def complete(self, request_id: str, now: float, outcome: Outcome | None = None
                 ) -> list[Action]:
        """An attempt ended. A retryable failure sends the request to another instance."""
        f = self._inflight.pop(request_id, None)
        if f is None:
            raise UnknownRequestError(
                f"complete({request_id!r}): the request is not in flight "
                f"({'queued' if self.is_tracked(request_id) else 'unknown or finished'})")
        request, view, attempt, dispatch_s = f
        self.state.released(view, request)
        if outcome is None:
            outcome = OK
        elif outcome.ttft_s is not None or outcome.e2e_s is not None:
            waited = dispatch_s - request.arrival_s  # global queue time is not the instance's
            self.state.latency(view, None if outcome.ttft_s is None else outcome.ttft_s - waited,
                               None if outcome.e2e_s is None else outcome.e2e_s - waited,
                               outcome.output_tokens)
        self._router.on_finish(request, view, outcome, now)
        if outcome.ok or not outcome.retryable:
            self._policy.on_finish(request, view, outcome, now)
            if outcome.ok:
                self.counters.completed += 1
            else:
                self.counters.failed += 1
            if self._failed_on:
                self._failed_on.pop(request_id, None)
                self._attempt.pop(request_id, None)
            actions: list[Action] = []
        else:
            actions = self._retry(request, view, attempt, outcome.error or "engine error", now)
        if self._nqueued:
            self._drain(now, actions)
        return actions

    def cancel(self, request_id: str, now: float, reason: str = "client disconnected"
               ) -> list[Action]:
        """The client gave up. A queued request is removed and rejected (``CANCELLED``); an
        in-flight one is ended as a failure (the driver stops its stream), and the capacity
        it held is given to queued work. Unknown or finished ids raise."""
        if request_id in self._inflight:
            return self.complete(request_id, now, Outcome(ok=False, error=reason))
        for level in self._queued:
            entry = level.get(request_id)
            if entry is not None:
                request = entry[0]
                self._policy.remove(request_id)
                self._dequeued(request)
                return [self._reject(request, RejectCause.CANCELLED,
                                     f"{request_id}: {reason} while queued", now)]
        raise UnknownRequestError(f"cancel({request_id!r}): the request is not queued or "
                                  "in flight (unknown or finished)")

    def observe(self, instance_id: str, stats: EngineStats, now: float) -> list[Action]:
        """Engine-reported load arrives (a scrape of the engine's metrics)."""
        view = self.state[instance_id]
        self.state.observed(view, stats, now)
        self._last_report[instance_id] = now
        actions: list[Action] = []
        if instance_id in self._timed_out:
            self._timed_out.discard(instance_id)
            actions += self._set_health(view, _UP, now, "engine reports again")
        if self._nqueued:
            self._drain(now, actions)
        return actions

    def set_health(self, instance_id: str, health: Health, now: float,
                   reason: str = "marked by driver") -> list[Action]:
        """UP, DRAINING (no new work) or DOWN (no work; in-flight requests retried)."""
        view = self.state[instance_id]
        self._timed_out.discard(instance_id)
        actions = self._set_health(view, Health(health), now, reason)
        if self._nqueued:
            self._drain(now, actions)
        return actions

    def tick(self, now: float) -> list[Action]:
        """Periodic: stale stats, health timeouts, queue timeouts, adaptive switching."""
        cfg = self.config
        actions: list[Action] = []
        self.state.expire_stats(now)
        if cfg.health_timeout_s is not None:
            for view in self.cluster.instances:
                last = self._last_report.get(view.instance_id)
                if (last is not None and view.health is not Health.DOWN
                        and now - last > cfg.health_timeout_s):
                    self._timed_out.add(view.instance_id)
                    actions += self._set_health(
                        view, Health.DOWN, now,
                        f"no engine report for {now - last:.3f}s "
                        f"(health_timeout_s {cfg.health_timeout_s:g})")
        if cfg.max_queue_wait_s is not None and self._nqueued:
            limit = cfg.max_queue_wait_s
            for level in self._queued:
                expired = []
                for request, enq in level.values():
                    if now - enq <= limit:
                        break
                    expired.append((request, enq))
                for request, enq in expired:
                    self._policy.remove(request.request_id)
                    self._dequeued(request)
                    actions.append(self._reject(
                        request, RejectCause.QUEUE_TIMEOUT,
                        f"{request.request_id} waited {now - enq:.3f}s in the queue "
                        f"(max_queue_wait_s {limit:g})", now))
        switches = self._policy.tick(now, self.cluster)
        if switches:
            self.switches.extend(switches)
            actions.extend(switches)
        if self._nqueued:
            self._drain(now, actions)
        return actions

    # -- run-time changes -------------------------------------------------------------
    def set_policy(self, policy: object, now: float) -> list[Action]:
        """Replace the queue policy; every queued request moves over in arrival order."""
        new = policy if isinstance(policy, QueuePolicy) else create_policy(policy)
        old = self._policy
        moved = old.drain()
        if len(moved) != self._nqueued:
            raise ControlPlaneError(f"policy {old.name!r} drained {len(moved)} requests but "
                                    f"{self._nqueued} were queued")
        for request in moved:
            new.push(request, now)
        self._policy = new
        switch = PolicySwitch(now, old.active, new.active, "set_policy")
        self.switches.append(switch)
        actions: list[Action] = [switch]
        if self._nqueued:
            self._drain(now, actions)
        return actions

    def set_router(self, router: object, now: float) -> list[Action]:
        """Replace the router; queued and in-flight requests are unaffected."""
        self._router = router if isinstance(router, Router) else create_router(router)
        actions: list[Action] = []
        if self._nqueued:
            self._drain(now, actions)
        return actions

    # -- internals --------------------------------------------------------------------
    def _route(self, request: Request, now: float) -> InstanceView | None:
        cluster = self.cluster
        candidates = cluster.candidates
        if not candidates:
            return None
        if self._policy.restricts_candidates:
            candidates = self._policy.candidates(request, candidates, cluster, now)
            if not candidates:
                return None
        if self._failed_on:
            failed = self._failed_on.get(request.request_id)
            if failed:
                fresh = tuple(c for c in candidates if c.instance_id not in failed)
                if fresh:
                    candidates = fresh
                elif self._usable_elsewhere(request, failed, now):
                    return None  # wait for room where it has not failed yet
        view = self._pick(request, candidates)
        state = self.state
        if view is not None and state.tpot_gate is not None and not state.gate_admits(
                view, request):
            # the TPOT gate refuses the request there (its own TPOT SLO is tighter than
            # the in-flight ones' the instance's room allows for): the router picks again
            # among the instances the gate admits it to, or it waits in the queue
            admits = state.gate_admits
            candidates = tuple(c for c in candidates if admits(c, request))
            view = self._pick(request, candidates) if candidates else None
        return view

    def _pick(self, request: Request, candidates: tuple[InstanceView, ...]
              ) -> InstanceView | None:
        iid = self._router.route(request, candidates, self.cluster, self._rng)
        if iid is None:
            return None
        view = self.cluster.get(iid)
        if view is None or view.health is not _UP or not view.has_room:
            raise ControlPlaneError(
                f"router {self._router.name!r} picked {iid!r}, which is not a candidate "
                f"(candidates: {[c.instance_id for c in candidates]})")
        return view

    def _usable_elsewhere(self, request: Request, failed: set[str], now: float) -> bool:
        """Whether an up instance the request has not failed on could take it once it has
        room (the policy's restriction applied). A retried request waits for one rather
        than going back, only because the others are full, to the instance that just failed
        it (most likely down, and not yet known to be)."""
        cluster = self.cluster
        up = tuple(v for v in cluster.instances
                   if v.health is _UP and v.instance_id not in failed)
        if up and self._policy.restricts_candidates:
            up = self._policy.candidates(request, up, cluster, now)
        return bool(up)

    def _dispatch(self, request: Request, view: InstanceView, attempt: int,
                  now: float) -> Dispatch:
        self.state.dispatched(view, request)
        self._inflight[request.request_id] = (request, view, attempt, now)
        self._policy.on_dispatch(request, view, now)
        self._router.on_dispatch(request, view, now)
        self.counters.dispatched += 1
        return Dispatch(request, view.instance_id, attempt)

    def _reject(self, request: Request, cause: RejectCause, detail: str,
                now: float) -> Reject:
        rejected = self.counters.rejected
        rejected[cause.value] = rejected.get(cause.value, 0) + 1
        rid = request.request_id
        if self._failed_on:
            self._failed_on.pop(rid, None)
            self._attempt.pop(rid, None)
        self._policy.on_reject(request, cause, now)
        return Reject(request, cause, detail)

    def _no_instance_detail(self) -> str:
        states = ", ".join(f"{v.instance_id} {v.health.value}" for v in self.cluster.instances)
        return f"no instance is up ({states})"

    def _enqueue(self, request: Request, now: float, *, force: bool = False) -> list[Action]:
        """Queue under the bounds; ``force`` (retries) skips the bounds: nothing is lost."""
        actions: list[Action] = []
        p = request.priority
        cfg = self.config
        if not force:
            limit = cfg.queue_limit(p)
            if len(self._queued[p]) >= limit:
                return [self._reject(request, RejectCause.QUEUE_FULL,
                                     f"priority {p} queue holds {len(self._queued[p])} "
                                     f"requests (limit {limit})", now)]
            if self._nqueued >= cfg.max_queue:
                victim = self._victim(p)
                if victim is None:
                    return [self._reject(request, RejectCause.QUEUE_FULL,
                                         f"queue holds {self._nqueued} requests (max_queue "
                                         f"{cfg.max_queue}) and none is less important "
                                         f"than priority {p}", now)]
                vreq, cause = victim
                self._policy.remove(vreq.request_id)
                self._dequeued(vreq)
                actions.append(self._reject(
                    vreq, cause, f"{vreq.request_id} (priority {vreq.priority}) evicted from "
                    f"the full queue for {request.request_id} (priority {p})", now))
        self._policy.push(request, now)
        self._queued[p][request.request_id] = (request, now)
        self._nqueued += 1
        self.state.queue_changed(p, 1)
        actions.append(Queued(request, self._nqueued))
        return actions

    def _victim(self, priority: int) -> tuple[Request, RejectCause] | None:
        """Newest queued request of the least important level that may be evicted."""
        sheddable = self.config.sheddable_priorities
        lower = range(NUM_PRIORITIES - 1, priority, -1)
        for level in lower:
            if level in sheddable and self._queued[level]:
                return self._queued[level][next(reversed(self._queued[level]))][0], \
                    RejectCause.SHED
        if self._policy.preempt_queued:
            for level in lower:
                if self._queued[level]:
                    return self._queued[level][next(reversed(self._queued[level]))][0], \
                        RejectCause.PREEMPTED
        return None

    def _dequeued(self, request: Request) -> None:
        del self._queued[request.priority][request.request_id]
        self._nqueued -= 1
        self.state.queue_changed(request.priority, -1)

    def _drain(self, now: float, actions: list[Action]) -> None:
        """Dispatch queued requests while instances have room (policy order)."""
        policy = self._policy
        cluster = self.cluster
        for request, cause, detail in policy.shed(now, cluster):
            self._dequeued(request)
            actions.append(self._reject(request, cause, detail, now))
        while self._nqueued and cluster.candidates:
            request = policy.peek()
            if request is None:
                raise ControlPlaneError(f"policy {policy.name!r} is empty but "
                                        f"{self._nqueued} requests are queued")
            view = self._route(request, now)
            if view is None:
                break
            if policy.pop() is not request:
                raise ControlPlaneError(f"policy {policy.name!r}: pop() differs from peek()")
            self._dequeued(request)
            attempt = self._attempt.get(request.request_id, 1) if self._attempt else 1
            actions.append(self._dispatch(request, view, attempt, now))

    def _retry(self, request: Request, view: InstanceView, attempt: int, reason: str,
               now: float) -> list[Action]:
        rid = request.request_id
        self._policy.on_retry(request, view, now)
        self.counters.retried += 1
        failed = self._failed_on.setdefault(rid, set())
        failed.add(view.instance_id)
        actions: list[Action] = [Retry(request, view.instance_id, reason, attempt)]
        if attempt >= self.config.max_attempts:
            tried = ", ".join(sorted(failed))
            actions.append(self._reject(
                request, RejectCause.RETRIES_EXHAUSTED,
                f"{rid} failed on {tried} after {attempt} attempt(s) (max_attempts "
                f"{self.config.max_attempts}); last error: {reason}", now))
            return actions
        self._attempt[rid] = attempt + 1
        actions += self._enqueue(request, now, force=True)
        return actions

    def _set_health(self, view: InstanceView, health: Health, now: float,
                    reason: str) -> list[Action]:
        if not self.state.set_health(view, health):
            return []
        actions: list[Action] = []
        if health is Health.DOWN:
            lost = [f for f in self._inflight.values() if f[1] is view]
            for request, _, attempt, _ in lost:
                del self._inflight[request.request_id]
                self.state.released(view, request)
                self._router.on_finish(request, view, None, now)
                actions += self._retry(request, view, attempt,
                                       f"instance {view.instance_id} down: {reason}", now)
        return actions
