"""Cost-aware scheduling: the cheapest instance class that meets the SLO, and tenant budgets.

Placement (``candidates``, so ``restricts_candidates`` is True): the router's candidates are
grouped into *classes* by price per token (``spec.usd_per_token``: hourly price / nominal
throughput). Classes are tried cheapest first; the first class with at least one instance on
which the request is estimated to meet its SLO (:func:`~control_plane.policies.slo.lateness_s`,
requiring ``margin_s`` seconds of headroom) wins, and the router picks among *those*
instances of it. If no class meets the SLO, the class of the instance with the smallest
estimated lateness (the fastest) is returned whole. Requests without an SLO go to the
cheapest class. The result is never empty when the candidates are not.

Budgets: the cost of a request on an instance is ``total tokens x usd_per_token``
(prompt + expected output). Per-tenant budgets come from ``tenant_budgets_usd``, else
``default_budget_usd`` (None: unlimited). The ledger per tenant holds ``spent`` (charged on
finish with the actual tokens: ``outcome.output_tokens`` when known, else the expected ones)
and ``reserved`` (held for requests not yet charged):

- ``admit`` computes the cheapest possible cost over the routable instances and rejects with
  ``BUDGET_EXHAUSTED`` when it exceeds the request's own ``cost_budget_usd`` or the tenant's
  remaining budget (budget - spent - reserved). An admitted request of a budgeted tenant
  holds that cheapest cost while queued, so a burst cannot overrun the budget.
- ``on_dispatch`` replaces the hold with the estimate on the chosen instance; ``on_retry`` and
  ``on_reject`` release it; ``on_finish`` releases it and charges the actual cost.
- At dispatch, classes the request cannot afford (its own budget, or the tenant's remaining
  budget plus its own hold) are skipped. If no candidate is affordable the cheapest class is
  returned anyway: the budget is a hard limit at admission and a soft one at dispatch, because
  holding the head request would block the whole queue. Spend can therefore exceed a budget
  by at most the in-flight requests' difference between estimated and actual cost.

Queue order: ``order="fifo"`` (default, arrival order) or ``"edf"`` (earliest SLO deadline,
requests without an SLO last), both static heap keys.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from control_plane.actions import Outcome, RejectCause
from control_plane.policies._params import check_mapping, check_number
from control_plane.policies.base import HeapPolicy
from control_plane.policies.slo import lateness_s
from control_plane.types import ClusterView, InstanceView, Request

__all__ = ["CostPolicy"]

_EPS = 1e-12  # tolerance on dollar comparisons (float sums of many small charges)


class CostPolicy(HeapPolicy):
    """Cheapest SLO-meeting instance class, per-tenant budgets with reservations."""

    name = "cost"
    restricts_candidates = True

    def __init__(self, tenant_budgets_usd: dict[str, float] | None = None,
                 default_budget_usd: float | None = None, margin_s: float = 0.0,
                 order: str = "fifo") -> None:
        super().__init__()
        self.tenant_budgets_usd = check_mapping("cost", "tenant_budgets_usd",
                                                tenant_budgets_usd)
        self.default_budget_usd = check_number("cost", "default_budget_usd",
                                               default_budget_usd, minimum=0.0,
                                               allow_none=True)
        self.margin_s = check_number("cost", "margin_s", margin_s, minimum=0.0)
        if order not in ("fifo", "edf"):
            raise ValueError(f"cost: parameter order={order!r} must be 'fifo' or 'edf'")
        self.order = order
        self._spent: dict[str, float] = {}
        self._reserved: dict[str, float] = {}
        self._holds_n: dict[str, int] = {}  # tenant -> number of holds (exact zeroing)
        self._holds: dict[str, float] = {}  # request id -> dollars held for it
        self._cheapest_for: tuple | None = None  # routable tuple the cache below is for
        self._cheapest: tuple[InstanceView, float] | None = None
        self._classes_for: Sequence[InstanceView] | None = None
        self._classes: list[tuple[float, tuple[InstanceView, ...]]] = []

    # -- order ------------------------------------------------------------------------
    def key(self, request: Request) -> float | tuple[float, float]:
        if self.order == "fifo":
            return request.arrival_s
        return (request.deadline_s(), request.arrival_s)

    # -- ledger -----------------------------------------------------------------------
    def budget_usd(self, tenant: str) -> float | None:
        """The tenant's budget, None when unlimited."""
        return self.tenant_budgets_usd.get(tenant, self.default_budget_usd)

    def spent_usd(self, tenant: str) -> float:
        return self._spent.get(tenant, 0.0)

    def reserved_usd(self, tenant: str) -> float:
        """Held for the tenant's queued (budgeted tenants) and in-flight requests."""
        return self._reserved.get(tenant, 0.0)

    def ledger(self) -> dict[str, tuple[float, float]]:
        """tenant -> (spent_usd, reserved_usd), for every tenant seen (a copy)."""
        names = sorted(set(self._spent) | set(self._reserved))
        return {t: (self.spent_usd(t), self.reserved_usd(t)) for t in names}

    def _hold(self, request: Request, usd: float) -> None:
        self._release(request)
        t = request.tenant
        self._holds[request.request_id] = usd
        self._reserved[t] = self._reserved.get(t, 0.0) + usd
        self._holds_n[t] = self._holds_n.get(t, 0) + 1

    def _release(self, request: Request) -> None:
        usd = self._holds.pop(request.request_id, None)
        if usd is None:
            return
        t = request.tenant
        n = self._holds_n[t] - 1
        self._holds_n[t] = n
        self._reserved[t] = 0.0 if n == 0 else self._reserved[t] - usd

    # -- helpers ----------------------------------------------------------------------
    def _cheapest_instance(self, cluster: ClusterView) -> tuple[InstanceView, float]:
        pool = cluster.routable or cluster.instances
        if pool is not self._cheapest_for:
            best = min(pool, key=lambda v: (v.spec.usd_per_token, v.index))
            self._cheapest_for = pool
            self._cheapest = (best, best.spec.usd_per_token)
        return self._cheapest

    def _price_classes(self, cands: Sequence[InstanceView]
                       ) -> list[tuple[float, tuple[InstanceView, ...]]]:
        if cands is not self._classes_for:
            groups: dict[float, list[InstanceView]] = {}
            for v in cands:
                groups.setdefault(v.spec.usd_per_token, []).append(v)
            self._classes = [(p, tuple(groups[p])) for p in sorted(groups)]
            self._classes_for = cands
        return self._classes

    def _allowance(self, request: Request) -> float:
        """Dollars this request may cost: its own budget and its tenant's remainder."""
        allow = math.inf if request.cost_budget_usd is None else request.cost_budget_usd
        budget = self.budget_usd(request.tenant)
        if budget is not None:
            own = self._holds.get(request.request_id, 0.0)
            left = budget - self.spent_usd(request.tenant) - (
                self.reserved_usd(request.tenant) - own)
            allow = min(allow, left)
        return allow

    # -- hooks ------------------------------------------------------------------------
    def admit(self, request: Request, cluster: ClusterView,
              now: float) -> tuple[RejectCause, str] | None:
        v, price = self._cheapest_instance(cluster)
        need = request.total_tokens * price
        if request.cost_budget_usd is not None and need > request.cost_budget_usd + _EPS:
            return (RejectCause.BUDGET_EXHAUSTED,
                    f"{request.request_id}: cost budget ${request.cost_budget_usd:.4f} is below"
                    f" the cheapest possible cost ${need:.4f} ({v.instance_id})")
        t = request.tenant
        budget = self.budget_usd(t)
        if budget is None:
            return None
        spent, reserved = self.spent_usd(t), self.reserved_usd(t)
        if spent + reserved + need > budget + _EPS:
            return (RejectCause.BUDGET_EXHAUSTED,
                    f"tenant {t} spent ${spent:.4f} + reserved ${reserved:.4f} of "
                    f"${budget:.4f}; this request needs at least ${need:.4f} on the cheapest "
                    f"instance ({v.instance_id})")
        self._hold(request, need)
        return None

    def candidates(self, request: Request, candidates: Sequence[InstanceView],
                   cluster: ClusterView, now: float) -> Sequence[InstanceView]:
        if not candidates:
            return candidates
        classes = self._price_classes(candidates)
        tokens = request.total_tokens
        allow = self._allowance(request)
        if allow < math.inf:
            affordable = [c for c in classes if tokens * c[0] <= allow + _EPS]
            if not affordable:
                return classes[0][1]
            classes = affordable
        td = request.ttft_deadline_s()
        ed = request.e2e_deadline_s()
        if td is None and ed is None:
            return classes[0][1]
        need = -self.margin_s
        best_late, best_class = math.inf, classes[0][1]
        for _, members in classes:
            ok = []
            for v in members:
                late = lateness_s(request, v, now, td, ed)[0]
                if late <= need:
                    ok.append(v)
                elif late < best_late:
                    best_late, best_class = late, members
            if ok:
                return members if len(ok) == len(members) else ok
        return best_class

    def on_dispatch(self, request: Request, instance: InstanceView, now: float) -> None:
        self._hold(request, request.total_tokens * instance.spec.usd_per_token)

    def on_retry(self, request: Request, instance: InstanceView, now: float) -> None:
        self._release(request)

    def on_reject(self, request: Request, cause: RejectCause, now: float) -> None:
        self._release(request)

    def on_finish(self, request: Request, instance: InstanceView, outcome: Outcome,
                  now: float) -> None:
        self._release(request)
        out = None if outcome is None else outcome.output_tokens
        if out is None:
            out = request.expected_output_tokens
        t = request.tenant
        usd = (request.prompt_tokens + out) * instance.spec.usd_per_token
        self._spent[t] = self._spent.get(t, 0.0) + usd
