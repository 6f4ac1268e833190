"""Prefix-cache aware routing (the ``locality`` router's decision), SGLang cache_aware style.

One filter narrows the candidates to the decision, in a single pass over them:

1. Imbalance guard: with ``load`` = in-flight requests, if ``max - min >
   balance_abs_threshold`` and ``max > balance_rel_threshold * min`` over the candidates,
   only the least loaded candidates stay in the running (cache affinity to a busier
   instance is given up; among the least loaded, a cached prefix still counts).
2. Every remaining candidate scores ``match + load_weight * (1 - inflight /
   max_inflight)``, ``match`` = matched leading prefix blocks / the request's blocks, from
   the approximate prefix index (:class:`~control_plane.routing.prefix_index.PrefixTracker`)
   fed on dispatch. The best-scoring candidates remain (a cache hit wins an exact tie with a
   miss; the picker breaks remaining ties at random).

Only instances with a match can beat the least utilised instance, so the filter scores
those few and compares them with the least utilisation, without a score per candidate:
the same choice as a ``prefix_cache:1`` + ``inflight:load_weight`` pipeline behind a
``load_balance_guard``, at a fraction of the cost.
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import attrgetter

from control_plane.errors import ConfigError
from control_plane.prefix import DEFAULT_BLOCK_SIZE
from control_plane.routing.base import Filter
from control_plane.routing.filters import LoadBalanceGuard
from control_plane.routing.prefix_cache import PrefixTracker
from control_plane.types import ClusterView, InstanceView, Request

__all__ = ["LocalityFilter"]

_INDEX = attrgetter("index")


def _all_at(candidates: Sequence[InstanceView], values: list, target) -> Sequence[InstanceView]:
    """The candidates whose value equals ``target`` (C-level index() hops)."""
    k = values.count(target)
    if k == len(values):
        return candidates
    i = values.index(target)
    if k == 1:
        return (candidates[i],)
    out = [candidates[i]]
    index = values.index
    for _ in range(k - 1):
        i = index(target, i + 1)
        out.append(candidates[i])
    return out


class LocalityFilter(PrefixTracker, Filter):
    """Narrows the candidates to the locality decision (see the module doc)."""

    name = "locality"

    def __init__(self, block_size: int = DEFAULT_BLOCK_SIZE, max_blocks: int | None = None,
                 stride: int = 8, load_weight: float = 0.5, balance_abs_threshold: float = 8,
                 balance_rel_threshold: float = 1.5) -> None:
        super().__init__(block_size, max_blocks, stride)
        guard = LoadBalanceGuard(balance_abs_threshold, balance_rel_threshold)  # validates
        if isinstance(load_weight, bool) or not isinstance(load_weight, (int, float)) or not (
                0 <= load_weight < float("inf")):
            raise ConfigError(f"{self.name}: load_weight must be a finite number >= 0, "
                              f"got {load_weight!r}")
        self.load_weight = float(load_weight)
        self.abs_threshold = guard.abs_threshold
        self.rel_threshold = guard.rel_threshold
        self._seen: Sequence[InstanceView] | None = None  # last candidate tuple ...
        self._cached: tuple[int, frozenset[str]] = (0, frozenset())  # ... and its shape

    def _shape(self, candidates: Sequence[InstanceView]) -> tuple[int, frozenset[str]]:
        """(common max_inflight or 0 when mixed, candidate ids), cached per tuple."""
        if candidates is self._seen:
            return self._cached
        caps = {v.spec.max_inflight for v in candidates}
        shape = (caps.pop() if len(caps) == 1 else 0,
                 frozenset(v.instance_id for v in candidates))
        if type(candidates) is tuple:  # immutable: cache by identity
            self._seen, self._cached = candidates, shape
        return shape

    def filter(self, request: Request, candidates: Sequence[InstanceView],
               cluster: ClusterView) -> Sequence[InstanceView]:
        if len(candidates) < 2:
            if cluster.routable is not self._routable:
                self.sync(cluster)
            return candidates
        loads = [v.inflight for v in candidates]
        lo, hi = min(loads), max(loads)
        if hi - lo > self.abs_threshold and hi > self.rel_threshold * lo:
            candidates = _all_at(candidates, loads, lo)  # the guard: least loaded only
            if len(candidates) == 1:
                return candidates
            loads = [lo] * len(candidates)
        groups = self.matches(request, cluster)
        w = self.load_weight
        if not groups and not w:
            return candidates
        cap, ids = self._shape(candidates)
        if cap:  # one limit for all: in-flight counts order like utilisation
            base = w * (1.0 - lo / cap)
        else:
            loads = [v.inflight / v.spec.max_inflight for v in candidates]
            lo = min(loads)
            base = w * (1.0 - lo)
        best: list[InstanceView] = []
        top = base  # a match must beat the least utilised; on an exact tie the hit wins
        unit = self.stride / len(request.prefix_hashes) if groups else 0.0
        every = candidates is cluster.candidates  # then a holder (routable) is a candidate
        get = cluster.get  # iff it has room
        for m, holder_ids in groups:
            views = [v for v in map(get, holder_ids) if v is not None
                     and (v.has_room if every else v.instance_id in ids)]
            if not views:
                continue
            if cap:
                gl = [v.inflight for v in views]
                glo = min(gl)
                total = min(1.0, m * unit) + w * (1.0 - glo / cap)
            else:
                gl = [v.inflight / v.spec.max_inflight for v in views]
                glo = min(gl)
                total = min(1.0, m * unit) + w * (1.0 - glo)
            if total >= top:
                tied = [v for v, x in zip(views, gl, strict=True) if x == glo]
                best = tied if total > top else best + tied
                top = total
        if best:
            if len(best) > 1:  # holders come from a set of str: restore cluster order
                best.sort(key=_INDEX)
            return best
        return _all_at(candidates, loads, lo)
