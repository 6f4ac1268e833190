"""Requests in: trace readers and seeded synthetic generators yielding control_plane Requests."""

from workloads.synthetic import DEFAULT_CLASSES, RequestClass, poisson_mix

__all__ = ["DEFAULT_CLASSES", "RequestClass", "poisson_mix"]
