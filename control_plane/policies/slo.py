"""SLO-aware scheduling: earliest deadline first, with shedding of infeasible requests.

Order (EDF): each request's deadline is ``Request.deadline_s()`` (the TTFT deadline when the
SLO constrains TTFT, else the end-to-end deadline). Requests without an SLO get
``arrival_s + default_deadline_s`` when that parameter is set; when it is None (default) their
deadline is +inf, so they go after every request with a deadline, first come first served
among themselves. Ties go to the earlier arrival, then to the submission order. The key is
static, so the queue is a heap (O(log n) push / pop).

Feasibility: a request with an SLO is *feasible* on an instance when the nominal estimates
of :mod:`control_plane.estimate` say it can still meet every constrained deadline if it started
now: ``now + estimate_ttft_s <= ttft_deadline + slack_s`` and, when an end-to-end deadline
exists (explicit e2e SLO, or TTFT + TPOT x outputs), ``now + estimate_e2e_s <= e2e_deadline +
slack_s``. It is feasible when it is feasible on at least one routable instance. The
estimates ignore the further wait in the global queue, so this only drops requests that are
late even in the best case. A positive ``slack_s`` tolerates estimate error; a negative one
sheds earlier, keeping a safety margin. With no routable instance at all, only requests whose
deadline has already passed are infeasible.

With ``shed_infeasible`` (default True):

- ``admit`` rejects a request that is already infeasible on arrival (``SLO_INFEASIBLE``).
- ``shed`` walks from the queue head, in deadline order, and removes infeasible requests; it
  stops at the first feasible request or the first request without an SLO. Each call thus
  costs one feasibility check plus one per request dropped (each request is dropped at most
  once), so shedding is amortised O(log n) per request. The rule is deliberately cheap and
  best-effort: a request behind a feasible head is checked only once it reaches the head, and
  the manager's dispatch loop may dispatch it before that.

The detail of a shed names the request, the deadline, the best estimate and the instance it
was computed for, e.g. ``r7: TTFT deadline 3.200s, earliest estimated first token 3.950s
(i2)``.
"""

from __future__ import annotations

import math

from control_plane.actions import RejectCause
from control_plane.estimate import estimate_tpot_s, estimate_ttft_s
from control_plane.policies._params import check_bool, check_number
from control_plane.policies.base import HeapPolicy, Shed
from control_plane.types import ClusterView, InstanceView, Request

__all__ = ["SloPolicy", "infeasibility", "lateness_s"]


def lateness_s(request: Request, v: InstanceView, now: float, ttft_deadline: float | None,
               e2e_deadline: float | None) -> tuple[float, float, float | None]:
    """How late ``request`` would be on ``v`` if it started now, by the nominal estimates.

    Returns ``(lateness, first_token_at, done_at)``: ``lateness`` is the largest of
    ``estimated time - deadline`` over the constrained deadlines (<= 0 means on time; -inf
    when nothing is constrained), the estimated absolute time of the first token, and the
    estimated absolute completion time (None when no end-to-end deadline was given).
    """
    first = now + estimate_ttft_s(request, v)
    late = -math.inf if ttft_deadline is None else first - ttft_deadline
    done = None
    if e2e_deadline is not None:
        done = first + estimate_tpot_s(v) * max(0, request.expected_output_tokens - 1)
        late = max(late, done - e2e_deadline)
    return late, first, done


def infeasibility(request: Request, cluster: ClusterView, now: float,
                  slack_s: float = 0.0) -> str | None:
    """None when ``request`` can still meet its SLO on some routable instance, else why not.

    Requests without a constrained deadline are always feasible. Examines instances in
    configuration order and stops at the first on which the request is on time.
    """
    td = request.ttft_deadline_s()
    ed = request.e2e_deadline_s()
    if td is None and ed is None:
        return None
    routable = cluster.routable
    if not routable:
        d, what = (td, "TTFT") if td is not None else (ed, "e2e")
        if now > d + slack_s:
            return (f"{request.request_id}: {what} deadline {d:.3f}s passed at {now:.3f}s "
                    "(no routable instance)")
        return None
    best = None
    for v in routable:
        late, first, done = lateness_s(request, v, now, td, ed)
        if late <= slack_s:
            return None
        if best is None or late < best[0]:
            best = (late, first, done, v)
    _, first, done, v = best
    if td is not None and first > td + slack_s:
        return (f"{request.request_id}: TTFT deadline {td:.3f}s, earliest estimated first "
                f"token {first:.3f}s ({v.instance_id})")
    return (f"{request.request_id}: e2e deadline {ed:.3f}s, earliest estimated completion "
            f"{done:.3f}s ({v.instance_id})")


class SloPolicy(HeapPolicy):
    """Earliest deadline first; sheds and refuses requests that cannot meet their SLO."""

    name = "slo"

    def __init__(self, shed_infeasible: bool = True, slack_s: float = 0.0,
                 default_deadline_s: float | None = None) -> None:
        super().__init__()
        self.shed_infeasible = check_bool("slo", "shed_infeasible", shed_infeasible)
        self.slack_s = check_number("slo", "slack_s", slack_s)
        self.default_deadline_s = check_number("slo", "default_deadline_s", default_deadline_s,
                                               minimum=0.0, allow_none=True)

    def key(self, request: Request) -> tuple[float, float]:
        d = request.deadline_s()
        if d == math.inf and self.default_deadline_s is not None:
            d = request.arrival_s + self.default_deadline_s
        return (d, request.arrival_s)

    def admit(self, request: Request, cluster: ClusterView,
              now: float) -> tuple[RejectCause, str] | None:
        if not self.shed_infeasible or request.slo is None:
            return None
        why = infeasibility(request, cluster, now, self.slack_s)
        return None if why is None else (RejectCause.SLO_INFEASIBLE, why)

    def shed(self, now: float, cluster: ClusterView) -> list[Shed]:
        if not self.shed_infeasible or not self._live:
            return []
        out: list[Shed] = []
        while True:
            head = self.peek()
            if head is None or head.slo is None:
                break
            why = infeasibility(head, cluster, now, self.slack_s)
            if why is None:
                break
            self.pop()
            out.append((head, RejectCause.SLO_INFEASIBLE, why))
        return out
