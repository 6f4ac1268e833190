"""Global-queue scheduling policies, registered by name (``POLICIES``).

Built in: ``fifo`` (arrival order), ``priority`` (five levels, optional linear aging),
``slo`` (earliest deadline first, sheds SLO-infeasible requests), ``cost`` (cheapest instance
class meeting the SLO, per-tenant budgets), ``fair`` (virtual token counter across tenants)
and ``adaptive`` (switches among the others on load and SLO attainment).
"""

from __future__ import annotations

from control_plane.policies.adaptive import AdaptivePolicy
from control_plane.policies.base import HeapPolicy, QueuePolicy, Shed
from control_plane.policies.cost import CostPolicy
from control_plane.policies.fair import FairPolicy
from control_plane.policies.fifo import FifoPolicy
from control_plane.policies.priority import PriorityPolicy
from control_plane.policies.slo import SloPolicy, infeasibility, lateness_s
from control_plane.registry import Registry

__all__ = [
    "POLICIES",
    "AdaptivePolicy",
    "CostPolicy",
    "FairPolicy",
    "FifoPolicy",
    "HeapPolicy",
    "PriorityPolicy",
    "QueuePolicy",
    "Shed",
    "SloPolicy",
    "create_policy",
    "infeasibility",
    "lateness_s",
]

POLICIES: Registry[QueuePolicy] = Registry("policies")
POLICIES.register("fifo", FifoPolicy)
POLICIES.register("priority", PriorityPolicy)
POLICIES.register("slo", SloPolicy)
POLICIES.register("cost", CostPolicy)
POLICIES.register("fair", FairPolicy)
POLICIES.register("adaptive", AdaptivePolicy)


def create_policy(spec: object) -> QueuePolicy:
    """``"fifo"`` or ``{"type": "priority", "params": {"aging_s": 5}}`` -> a new policy."""
    return POLICIES.create(spec, registry=POLICIES)
