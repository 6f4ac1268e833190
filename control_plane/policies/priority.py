"""Priority scheduling over the five request levels, with optional linear aging.

Level 0 (critical) .. 4 (background); lower is served first. Without aging this is strict
priority: the key is ``(level, arrival_s)`` and a steady stream of important work can starve
background work indefinitely.

Aging: a request's *effective level* falls linearly with its wait, one level per ``aging_s``
seconds: ``eff(now) = level - (now - arrival_s) / aging_s``. Comparing two queued requests at
any common ``now``, the ``now`` term is the same for both and cancels, so ordering by
``eff`` equals ordering by the static key ``arrival_s + level * aging_s`` (a "virtual
arrival time": each level above 0 costs ``aging_s`` seconds of head start). The queue is
therefore an ordinary heap on that key (O(log n) push / pop, no re-sorting as time passes)
and a level-4 request is never starved: it overtakes level-0 work that arrives more than
``4 * aging_s`` seconds after it. Ties in the key go to the earlier arrival, then to the
submission order.

``preempt_queued`` (default True) lets the manager evict a queued request of *any* lower
priority when a more important request meets a full queue, not only sheddable classes.
"""

from __future__ import annotations

import math

from control_plane.policies._params import check_bool, check_number
from control_plane.policies.base import HeapPolicy
from control_plane.types import Request

__all__ = ["PriorityPolicy"]


class PriorityPolicy(HeapPolicy):
    """Strict or aged priority; see the module docstring for the aging key."""

    name = "priority"

    def __init__(self, aging_s: float | None = None, preempt_queued: bool = True) -> None:
        super().__init__()
        aging = check_number("priority", "aging_s", aging_s, minimum=0.0, strict=True,
                             allow_none=True, allow_inf=True)
        self.aging_s: float | None = None if aging is None or math.isinf(aging) else aging
        self.preempt_queued = check_bool("priority", "preempt_queued", preempt_queued)

    def key(self, request: Request) -> tuple[float, float]:
        if self.aging_s is None:
            return (float(request.priority), request.arrival_s)
        return (request.arrival_s + request.priority * self.aging_s, request.arrival_s)
