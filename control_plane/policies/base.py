"""The queue-policy protocol and a heap-backed base for policies with a static order key.

A queue policy owns the global queue's data structure and its ordering, and gets hooks for
admission, candidate restriction, shedding and bookkeeping. The manager owns the bounds
(per-priority queue limits, victim choice among sheddable classes) and calls the hooks.
All hooks are synchronous and pure apart from the policy's own state: no clock, no I/O.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

from control_plane.actions import Outcome, PolicySwitch, RejectCause
from control_plane.types import ClusterView, InstanceView, Request

__all__ = ["HeapPolicy", "QueuePolicy", "Shed"]

Shed = tuple[Request, RejectCause, str]  # a queued request to drop, with cause and detail


class QueuePolicy:
    """Base class and protocol of global-queue policies.

    Subclasses implement ``push`` / ``peek`` / ``pop`` / ``remove`` / ``__len__`` /
    ``drain`` and override hooks as needed. ``preempt_queued``: a full queue may evict
    queued work of any lower priority (not only sheddable classes) to admit more important
    work. ``restricts_candidates``: ``candidates`` is called before routing.
    """

    name: str = "base"
    preempt_queued: bool = False
    restricts_candidates: bool = False

    # -- queue ------------------------------------------------------------------------
    def push(self, request: Request, now: float) -> None:
        raise NotImplementedError

    def peek(self) -> Request | None:
        """The request that would be dispatched next, or None when empty."""
        raise NotImplementedError

    def pop(self) -> Request:
        """Remove and return what ``peek`` returns (the queue must not be empty)."""
        raise NotImplementedError

    def remove(self, request_id: str) -> bool:
        """Remove a queued request by id; False if it is not queued."""
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError

    def drain(self) -> list[Request]:
        """Remove every queued request and return them in arrival order."""
        raise NotImplementedError

    # -- hooks ------------------------------------------------------------------------
    def admit(self, request: Request, cluster: ClusterView,
              now: float) -> tuple[RejectCause, str] | None:
        """Reject at submission with (cause, detail), or None to admit."""
        return None

    def candidates(self, request: Request, candidates: Sequence[InstanceView],
                   cluster: ClusterView, now: float) -> Sequence[InstanceView]:
        """Restrict the instances the router may choose for ``request``."""
        return candidates

    def shed(self, now: float, cluster: ClusterView) -> list[Shed]:
        """Queued requests to drop now (for example SLO-infeasible); removed by the policy."""
        return []

    def on_dispatch(self, request: Request, instance: InstanceView, now: float) -> None:
        pass

    def on_retry(self, request: Request, instance: InstanceView, now: float) -> None:
        """A dispatched attempt was undone (instance down or retryable failure)."""

    def on_finish(self, request: Request, instance: InstanceView, outcome: Outcome,
                  now: float) -> None:
        """An attempt ended (ok or not) and will not be retried."""

    def on_reject(self, request: Request, cause: RejectCause, now: float) -> None:
        pass

    def tick(self, now: float, cluster: ClusterView) -> list[PolicySwitch]:
        """Periodic hook; adaptive policies switch here and report the switches."""
        return []

    @property
    def active(self) -> str:
        """Name of the policy that orders the queue now (differs for adaptive)."""
        return self.name


class HeapPolicy(QueuePolicy):
    """A queue ordered by a static key per request (min first), ties by arrival order.

    Removal is lazy: removed ids are skipped when they reach the top. ``key`` must not
    depend on time or on other requests.
    """

    def __init__(self) -> None:
        self._heap: list[tuple] = []
        self._live: dict[str, Request] = {}  # queued requests in push order
        self._seq = 0

    def key(self, request: Request) -> tuple | float:
        raise NotImplementedError

    def push(self, request: Request, now: float) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (self.key(request), self._seq, request))
        self._live[request.request_id] = request

    def _top(self) -> tuple | None:
        heap, live = self._heap, self._live
        while heap:
            top = heap[0]
            if live.get(top[2].request_id) is top[2]:
                return top
            heapq.heappop(heap)
        return None

    def peek(self) -> Request | None:
        top = self._top()
        return None if top is None else top[2]

    def pop(self) -> Request:
        top = self._top()
        if top is None:
            raise IndexError(f"pop from an empty {self.name} queue")
        heapq.heappop(self._heap)
        del self._live[top[2].request_id]
        return top[2]

    def remove(self, request_id: str) -> bool:
        if self._live.pop(request_id, None) is None:
            return False
        if not self._live:
            self._heap.clear()
        elif len(self._heap) > 2 * len(self._live) + 64:
            self._compact()
        return True

    def _compact(self) -> None:
        live = self._live
        self._heap = [e for e in self._heap if live.get(e[2].request_id) is e[2]]
        heapq.heapify(self._heap)

    def __len__(self) -> int:
        return len(self._live)

    def queued(self) -> list[Request]:
        """Queued requests in dispatch order (a copy; for inspection and tests)."""
        live = self._live
        return [e[2] for e in sorted(self._heap) if live.get(e[2].request_id) is e[2]]

    def drain(self) -> list[Request]:
        out = sorted(self._live.values(), key=lambda r: r.arrival_s)
        self._live.clear()
        self._heap.clear()
        return out
