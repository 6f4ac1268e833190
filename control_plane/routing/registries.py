"""The routing registries, in their own module so that part modules can import them."""

from __future__ import annotations

from control_plane.registry import Registry
from control_plane.routing.base import Filter, Picker, Router, Scorer

__all__ = ["FILTERS", "PICKERS", "ROUTERS", "SCORERS"]

ROUTERS: Registry[Router] = Registry("routers")
FILTERS: Registry[Filter] = Registry("filters")
SCORERS: Registry[Scorer] = Registry("scorers")
PICKERS: Registry[Picker] = Registry("pickers")
