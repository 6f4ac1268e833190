"""Fair sharing among tenants: the Virtual Token Counter (VTC).

Sheng et al., "Fairness in Serving Large Language Models", OSDI 2024. Each tenant has a
virtual counter of the weighted service it received,
``(w_in x prompt tokens + w_out x output tokens) / weight(tenant)``. Requests wait in
per-tenant FIFO queues (by arrival); the next request comes from the *backlogged* tenant
(one with queued requests) with the smallest counter, ties by tenant name.

Counter lifting (the paper's rule, so an idle tenant cannot bank credit): when a tenant
becomes backlogged its counter is raised to ``max(own, min counter of the tenants already
backlogged)``; when no tenant is backlogged it is raised to ``max(own, counter of the tenant
that last left the queue)``.

Simplification: the paper charges output tokens one by one as they are generated inside the
engine's batches. Here the control plane dispatches whole requests to engines it does not
step, so a dispatch charges the *expected* output (``Request.expected_output_tokens``) at
once, and ``on_finish`` corrects by ``w_out x (actual - expected)`` when the outcome reports
the actual count. A retried attempt is refunded (its counter charge reversed) since the
request is queued again and will be charged when re-dispatched. The charge is made in
``pop`` (so the order is a property of the queue alone); ``on_dispatch`` charges only
requests that did not come through ``pop`` (dispatched directly on submit, or recorded while
another policy was active under ``adaptive``).

Cost: a heap of ``(counter, tenant)`` entries over backlogged tenants with lazy invalidation
(an entry is current while the tenant is backlogged and its counter is unchanged), and one
heap per tenant keyed by ``(arrival_s, submission order)``; push / pop / counter updates are
O(log n), removal is lazy.
"""

from __future__ import annotations

import heapq

from control_plane.actions import Outcome
from control_plane.policies._params import check_mapping, check_number
from control_plane.policies.base import QueuePolicy
from control_plane.types import InstanceView, Request

__all__ = ["FairPolicy"]


class FairPolicy(QueuePolicy):
    """Virtual token counter fair queueing across tenants."""

    name = "fair"

    def __init__(self, w_in: float = 1.0, w_out: float = 2.0,
                 tenant_weights: dict[str, float] | None = None,
                 default_weight: float = 1.0) -> None:
        self.w_in = check_number("fair", "w_in", w_in, minimum=0.0)
        self.w_out = check_number("fair", "w_out", w_out, minimum=0.0)
        if self.w_in == 0.0 and self.w_out == 0.0:
            raise ValueError("fair: parameters w_in=0 and w_out=0: at least one must be > 0")
        self.tenant_weights = check_mapping("fair", "tenant_weights", tenant_weights,
                                            minimum=0.0, strict=True)
        self.default_weight = check_number("fair", "default_weight", default_weight,
                                           minimum=0.0, strict=True)
        self._counter: dict[str, float] = {}
        self._queues: dict[str, list[tuple[float, int, Request]]] = {}
        self._count: dict[str, int] = {}  # tenant -> live queued requests
        self._live: dict[str, Request] = {}  # queued requests by id, in push order
        self._tenants: list[tuple[float, str]] = []  # (counter, tenant) of backlogged
        self._last_left: str | None = None
        self._seq = 0
        self._popped: Request | None = None  # charged in pop; on_dispatch skips it

    # -- inspection -------------------------------------------------------------------
    def counter(self, tenant: str) -> float:
        """The tenant's virtual counter (0 for a tenant never seen)."""
        return self._counter.get(tenant, 0.0)

    def counters(self) -> dict[str, float]:
        return dict(sorted(self._counter.items()))

    def weight(self, tenant: str) -> float:
        return self.tenant_weights.get(tenant, self.default_weight)

    # -- internals --------------------------------------------------------------------
    def _service(self, prompt_tokens: int, output_tokens: int, tenant: str) -> float:
        return (self.w_in * prompt_tokens + self.w_out * output_tokens) / self.weight(tenant)

    def _add(self, tenant: str, delta: float) -> None:
        c = self._counter.get(tenant, 0.0) + delta
        self._counter[tenant] = c
        if self._count.get(tenant, 0):
            heapq.heappush(self._tenants, (c, tenant))
            if len(self._tenants) > 2 * len(self._queues) + 64:
                self._compact_tenants()

    def _compact_tenants(self) -> None:
        cnt, ctr = self._count, self._counter
        self._tenants = [(ctr[t], t) for t in self._queues if cnt.get(t, 0)]
        heapq.heapify(self._tenants)

    def _min_tenant(self) -> tuple[float, str] | None:
        heap, cnt, ctr = self._tenants, self._count, self._counter
        while heap:
            c, t = heap[0]
            if cnt.get(t, 0) and ctr[t] == c:
                return heap[0]
            heapq.heappop(heap)
        return None

    def _head(self, tenant: str) -> list[tuple[float, int, Request]]:
        q, live = self._queues[tenant], self._live
        while live.get(q[0][2].request_id) is not q[0][2]:
            heapq.heappop(q)
        return q

    def _left(self, tenant: str) -> None:
        """``tenant`` has no queued request any more."""
        del self._queues[tenant]
        del self._count[tenant]
        self._last_left = tenant

    # -- queue ------------------------------------------------------------------------
    def push(self, request: Request, now: float) -> None:
        t = request.tenant
        if not self._count.get(t, 0):
            c = self._counter.get(t, 0.0)
            top = self._min_tenant()
            if top is not None:
                c = max(c, top[0])
            elif self._last_left is not None:
                c = max(c, self._counter.get(self._last_left, 0.0))
            self._counter[t] = c
            self._queues[t] = []
            self._count[t] = 0
            heapq.heappush(self._tenants, (c, t))
        self._seq += 1
        heapq.heappush(self._queues[t], (request.arrival_s, self._seq, request))
        self._count[t] += 1
        self._live[request.request_id] = request

    def peek(self) -> Request | None:
        top = self._min_tenant()
        return None if top is None else self._head(top[1])[0][2]

    def pop(self) -> Request:
        top = self._min_tenant()
        if top is None:
            raise IndexError("pop from an empty fair queue")
        t = top[1]
        r = heapq.heappop(self._head(t))[2]
        del self._live[r.request_id]
        self._count[t] -= 1
        if not self._count[t]:
            self._left(t)
        self._add(t, self._service(r.prompt_tokens, r.expected_output_tokens, t))
        self._popped = r
        return r

    def remove(self, request_id: str) -> bool:
        r = self._live.pop(request_id, None)
        if r is None:
            return False
        t = r.tenant
        self._count[t] -= 1
        if not self._count[t]:
            self._left(t)
        elif len(self._queues[t]) > 2 * self._count[t] + 64:
            live = self._live
            q = [e for e in self._queues[t] if live.get(e[2].request_id) is e[2]]
            heapq.heapify(q)
            self._queues[t] = q
        return True

    def __len__(self) -> int:
        return len(self._live)

    def queued(self) -> list[Request]:
        """Queued requests in arrival order (a copy; dispatch order depends on counters)."""
        return sorted(self._live.values(), key=lambda r: r.arrival_s)

    def drain(self) -> list[Request]:
        out = self.queued()
        top = self._min_tenant()
        if top is not None:  # as if the least-served backlogged tenant left last
            self._last_left = top[1]
        self._live.clear()
        self._queues.clear()
        self._count.clear()
        self._tenants.clear()
        return out

    # -- hooks ------------------------------------------------------------------------
    def on_dispatch(self, request: Request, instance: InstanceView, now: float) -> None:
        if request is self._popped:
            self._popped = None
            return
        t = request.tenant
        self._add(t, self._service(request.prompt_tokens, request.expected_output_tokens, t))

    def on_retry(self, request: Request, instance: InstanceView, now: float) -> None:
        t = request.tenant
        self._add(t, -self._service(request.prompt_tokens, request.expected_output_tokens, t))

    def on_finish(self, request: Request, instance: InstanceView, outcome: Outcome,
                  now: float) -> None:
        actual = None if outcome is None else outcome.output_tokens
        if actual is not None and actual != request.expected_output_tokens:
            t = request.tenant
            self._add(t, self._service(0, actual - request.expected_output_tokens, t))
