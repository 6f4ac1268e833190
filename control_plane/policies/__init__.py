"""Global-queue scheduling policies, registered by name (``POLICIES``)."""

from __future__ import annotations

from control_plane.policies.base import HeapPolicy, QueuePolicy
from control_plane.policies.fifo import FifoPolicy
from control_plane.registry import Registry

__all__ = ["POLICIES", "FifoPolicy", "HeapPolicy", "QueuePolicy", "create_policy"]

POLICIES: Registry[QueuePolicy] = Registry("policies")
POLICIES.register("fifo", FifoPolicy)


def create_policy(spec: object) -> QueuePolicy:
    """``"fifo"`` or ``{"type": "priority", "params": {"aging_s": 5}}`` -> a new policy."""
    return POLICIES.create(spec, registry=POLICIES)
