"""Prefix-aware parts: what they share (:class:`PrefixTracker`) and the ``prefix_cache``
scorer. The index itself is :class:`~control_plane.routing.prefix_index.PrefixIndex`.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from operator import attrgetter

from control_plane.errors import ConfigError
from control_plane.prefix import DEFAULT_BLOCK_SIZE
from control_plane.routing.base import Scorer
from control_plane.routing.prefix_index import PrefixIndex
from control_plane.types import ClusterView, InstanceView, Request

__all__ = ["DEFAULT_MAX_BLOCKS", "PrefixCacheScorer", "PrefixTracker", "position"]

DEFAULT_MAX_BLOCKS = 100_000  # per instance, when its KV capacity is unknown

_INDEX = attrgetter("index")


class PrefixTracker:
    """What prefix-aware parts share: a :class:`PrefixIndex` fed on dispatch.

    ``stride``: the index keeps one chain hash every ``stride`` blocks (the hash that ends
    each ``stride``-block chunk; a chain hash stands for its whole prefix, so nothing else is
    lost), which divides index work and memory by ``stride`` at a match granularity of
    ``stride * block_size`` tokens (default 8 x 16 = 128 tokens: ample for routing, and
    the index work per dispatch is what bounds the decision rate).
    Prompts shorter than one chunk are not indexed.
    ``max_blocks``: index budget per instance, in KV blocks; None derives it from the
    instance's ``kv_capacity_tokens // block_size`` when known, else ``DEFAULT_MAX_BLOCKS``.
    ``block_size`` must be the one the request's ``prefix_hashes`` were computed with.
    """

    name = "prefix"

    def __init__(self, block_size: int = DEFAULT_BLOCK_SIZE, max_blocks: int | None = None,
                 stride: int = 8) -> None:
        for key, value in (("block_size", block_size), ("stride", stride)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{self.name}: {key} must be an integer >= 1, got {value!r}")
        if max_blocks is not None and (isinstance(max_blocks, bool) or not isinstance(
                max_blocks, int) or max_blocks < 1):
            raise ConfigError(f"{self.name}: max_blocks must be an integer >= 1 or null, "
                              f"got {max_blocks!r}")
        self.block_size = block_size
        self.max_blocks = max_blocks
        self.stride = stride
        self.index = PrefixIndex()
        self._routable: tuple[InstanceView, ...] | None = None
        self._budgets: dict[str, tuple[object, int]] = {}  # id -> (spec, entries)
        # the last lookup, (request, keys, groups), so that the dispatch that usually
        # follows it skips the index searches
        self._last: tuple[Request, tuple[int, ...], list] | None = None

    def budget(self, instance: InstanceView) -> int:
        """Index entries allowed for ``instance`` (its block budget / ``stride``)."""
        cached = self._budgets.get(instance.instance_id)
        if cached is not None and cached[0] is instance.spec:
            return cached[1]
        blocks = self.max_blocks
        if blocks is None:
            blocks = instance.spec.kv_capacity_tokens // self.block_size
            if blocks <= 0:
                blocks = DEFAULT_MAX_BLOCKS
        entries = max(1, blocks // self.stride)
        self._budgets[instance.instance_id] = (instance.spec, entries)
        return entries

    def keys(self, hashes: tuple[int, ...]) -> tuple[int, ...]:
        """The chain hashes the index keeps for a prompt's ``prefix_hashes``."""
        stride = self.stride
        return hashes if stride == 1 else hashes[stride - 1::stride]

    def sync(self, cluster: ClusterView) -> None:
        """Forget the instances that stopped being routable (a down engine loses its
        cache; a draining one gets no more work)."""
        routable = self._routable = cluster.routable
        up = {v.instance_id for v in routable}
        for iid in self.index.instances():
            if iid not in up:
                self.index.forget(iid)

    def matches(self, request: Request,
                cluster: ClusterView) -> list[tuple[int, tuple[str, ...]]]:
        """``PrefixIndex.match_groups`` of the request's index keys, after forgetting the
        instances that stopped being routable (so every holder is routable)."""
        if cluster.routable is not self._routable:
            self.sync(cluster)
        hashes = request.prefix_hashes
        if len(hashes) < self.stride:
            return []
        keys = self.keys(hashes)
        groups = self.index.match_groups(keys)
        self._last = (request, keys, groups)
        return groups

    def on_dispatch(self, request: Request, instance: InstanceView, now: float) -> None:
        hashes = request.prefix_hashes
        if len(hashes) < self.stride:
            return
        last = self._last
        self._last = None
        iid = instance.instance_id
        if last is not None and last[0] is request:  # the index is unchanged since
            groups = last[2]
            held = 0
            for m, ids in groups:
                if iid in ids:
                    held = m
                    break
            self.index.insert(iid, last[1], self.budget(instance),
                              (held, groups[0][0] if groups else 0))
        else:
            self.index.insert(iid, self.keys(hashes), self.budget(instance))


def position(candidates: Sequence[InstanceView], v: InstanceView) -> int:
    """Index of ``v`` in ``candidates``, or -1. Bisects on the cluster index (candidates
    come in cluster order), verified by identity, else scans."""
    i = bisect_left(candidates, v.index, key=_INDEX)
    if i < len(candidates) and candidates[i] is v:
        return i
    return next((j for j, c in enumerate(candidates) if c is v), -1)


class PrefixCacheScorer(PrefixTracker, Scorer):
    """Matched leading prefix blocks / the request's blocks (see :class:`PrefixTracker`).

    A request without ``prefix_hashes`` scores 0 everywhere.
    """

    name = "prefix_cache"

    def score(self, request: Request, candidates: Sequence[InstanceView],
              cluster: ClusterView) -> Sequence[float]:
        groups = self.matches(request, cluster)
        scores = [0.0] * len(candidates)
        if groups:
            unit = self.stride / len(request.prefix_hashes)
            get = cluster.get
            for m, ids in groups:
                s = min(1.0, m * unit)
                for v in map(get, ids):
                    i = -1 if v is None else position(candidates, v)
                    if i >= 0:
                        scores[i] = s
        return scores
