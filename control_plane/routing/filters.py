"""Filters: each narrows the candidate set before scoring.

The load filters here never empty a non-empty set: when every candidate fails the test the
candidates pass through unchanged (an overloaded instance beats holding the request, which
the manager's room check already bounds).
"""

from __future__ import annotations

from collections.abc import Sequence

from control_plane.errors import ConfigError
from control_plane.routing.base import Filter
from control_plane.types import ClusterView, InstanceView, Request

__all__ = ["LoadBalanceGuard", "MaxInflightRatioFilter", "MinFreeKvFilter", "check_fraction"]


def check_fraction(owner: str, name: str, value: object, *, upper: float = 1.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            0.0 < value <= upper):
        raise ConfigError(f"{owner}: {name} must be a number in (0, {upper:g}], got {value!r}")
    return float(value)


class MinFreeKvFilter(Filter):
    """Drop instances whose estimated KV usage (``est_kv_usage``) is >= ``threshold``."""

    name = "min_free_kv"

    def __init__(self, threshold: float = 0.9) -> None:
        self.threshold = check_fraction(self.name, "threshold", threshold)

    def filter(self, request: Request, candidates: Sequence[InstanceView],
               cluster: ClusterView) -> Sequence[InstanceView]:
        t = self.threshold
        kept = [v for v in candidates if v.est_kv_usage < t]
        return kept if kept else candidates


class MaxInflightRatioFilter(Filter):
    """Drop instances whose ``inflight / spec.max_inflight`` is >= ``ratio``."""

    name = "max_inflight_ratio"

    def __init__(self, ratio: float = 0.9) -> None:
        self.ratio = check_fraction(self.name, "ratio", ratio)

    def filter(self, request: Request, candidates: Sequence[InstanceView],
               cluster: ClusterView) -> Sequence[InstanceView]:
        r = self.ratio
        kept = [v for v in candidates if v.inflight < r * v.spec.max_inflight]
        return kept if kept else candidates


class LoadBalanceGuard(Filter):
    """SGLang cache-aware routing's imbalance guard.

    The load is the candidate's in-flight requests (``load="inflight"``) or outstanding
    tokens (``load="inflight_tokens"``). The candidates are imbalanced when
    ``max - min > abs_threshold`` and ``max > rel_threshold * min``; then only the least
    loaded candidates pass (affinity is given up for balance), else all pass.
    """

    name = "load_balance_guard"

    def __init__(self, abs_threshold: float = 8, rel_threshold: float = 1.5,
                 load: str = "inflight") -> None:
        if isinstance(abs_threshold, bool) or not isinstance(abs_threshold, (int, float)) or (
                abs_threshold < 0):
            raise ConfigError(f"{self.name}: abs_threshold must be a number >= 0, "
                              f"got {abs_threshold!r}")
        if isinstance(rel_threshold, bool) or not isinstance(rel_threshold, (int, float)) or (
                rel_threshold < 1):
            raise ConfigError(f"{self.name}: rel_threshold must be a number >= 1, "
                              f"got {rel_threshold!r}")
        if load not in ("inflight", "inflight_tokens"):
            raise ConfigError(f"{self.name}: load must be 'inflight' or 'inflight_tokens', "
                              f"got {load!r}")
        self.abs_threshold = abs_threshold
        self.rel_threshold = rel_threshold
        self.load = load

    def filter(self, request: Request, candidates: Sequence[InstanceView],
               cluster: ClusterView) -> Sequence[InstanceView]:
        if len(candidates) < 2:
            return candidates
        if self.load == "inflight":
            loads = [v.inflight for v in candidates]
        else:
            loads = [v.inflight_tokens for v in candidates]
        lo, hi = min(loads), max(loads)
        if hi - lo > self.abs_threshold and hi > self.rel_threshold * lo:
            if self.load == "inflight":
                return [v for v in candidates if v.inflight == lo]
            return [v for v in candidates if v.inflight_tokens == lo]
        return candidates
