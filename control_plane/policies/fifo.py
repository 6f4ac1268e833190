"""First come, first served: the global queue in arrival order (ties by submission order)."""

from __future__ import annotations

from control_plane.policies.base import HeapPolicy
from control_plane.types import Request

__all__ = ["FifoPolicy"]


class FifoPolicy(HeapPolicy):
    name = "fifo"

    def key(self, request: Request) -> float:
        return request.arrival_s
