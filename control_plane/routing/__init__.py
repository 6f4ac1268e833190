"""Routers and load balancers: filters -> weighted scorers -> picker, registered by name.

Registries: ``ROUTERS`` (complete routers), ``FILTERS``, ``SCORERS``, ``PICKERS`` (parts
for the ``pipeline`` router that users compose in YAML).
"""

from __future__ import annotations

from control_plane.registry import Registry
from control_plane.routing.base import Filter, Picker, PipelineRouter, Router, Scorer

__all__ = [
    "FILTERS",
    "PICKERS",
    "ROUTERS",
    "SCORERS",
    "Filter",
    "Picker",
    "PipelineRouter",
    "Router",
    "Scorer",
    "create_router",
]

ROUTERS: Registry[Router] = Registry("routers")
FILTERS: Registry[Filter] = Registry("filters")
SCORERS: Registry[Scorer] = Registry("scorers")
PICKERS: Registry[Picker] = Registry("pickers")


def create_router(spec: object) -> Router:
    """``"round_robin"`` or ``{"type": "locality", "params": {...}}`` -> a new router."""
    return ROUTERS.create(spec)
