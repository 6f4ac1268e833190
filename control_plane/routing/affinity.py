"""Session affinity by consistent hashing with bounded loads (Mirrokni, Thorup, Zadimoghaddam,
"Consistent Hashing with Bounded Loads", SODA 2018).

A hash ring holds ``vnodes`` points per routable instance. A request's key hashes to a point
on the ring; walking clockwise, the first instance that is a candidate and whose load is
within the bound gets it. Load = in-flight requests; with ``n`` routable instances holding
``m`` in-flight requests in all, an instance is within the bound when
``inflight + 1 <= ceil(load_factor * (m + 1) / n)`` (the paper's capacity, counting the new
request). So the same session stays on the same instance while that instance has room and
is not overloaded, and removing an instance only remaps the keys that were on it. If no
candidate is within the bound (the policy or room checks excluded the ones that are), the
least loaded candidate takes the request, the first met on the walk among equals.

The key is ``request.session_id``; without one, ``request.request_id`` (``fallback=
"request"``: sessionless requests spread evenly) or ``request.tenant`` (``fallback=
"tenant"``: one tenant's requests share an instance). Hashes are BLAKE2b, stable across
processes (unlike Python's salted str hash). The ring is rebuilt only when the routable set
changes (cached on the tuple of routable ids).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence
from hashlib import blake2b

from control_plane.errors import ConfigError
from control_plane.routing.base import Filter, Scorer
from control_plane.types import ClusterView, Health, InstanceView, Request

__all__ = ["ConsistentHashRing", "SessionAffinityFilter", "SessionAffinityScorer",
           "stable_hash"]


def stable_hash(key: str) -> int:
    """64-bit BLAKE2b of a string: the same in every process."""
    return int.from_bytes(blake2b(key.encode(), digest_size=8).digest(), "little")


class ConsistentHashRing:
    """Points of ``vnodes`` virtual nodes per instance id, sorted by hash."""

    __slots__ = ("ids", "owners", "points")

    def __init__(self, ids: Sequence[str], vnodes: int) -> None:
        pts = sorted((stable_hash(f"{iid}#{k}"), iid) for iid in ids for k in range(vnodes))
        self.ids = tuple(ids)
        self.points = [p for p, _ in pts]
        self.owners = [iid for _, iid in pts]

    def walk(self, key_hash: int):
        """Distinct instance ids clockwise from ``key_hash``, each once."""
        owners = self.owners
        n = len(owners)
        start = bisect_right(self.points, key_hash)
        seen: set[str] = set()
        distinct = len(self.ids)
        for k in range(n):
            iid = owners[(start + k) % n]
            if iid not in seen:
                seen.add(iid)
                yield iid
                if len(seen) == distinct:
                    return


class _BoundedAffinity:
    """Shared state and decision of the affinity filter and scorer."""

    def __init__(self, load_factor: float = 1.25, vnodes: int = 128,
                 fallback: str = "request") -> None:
        if isinstance(load_factor, bool) or not isinstance(load_factor, (int, float)) or (
                load_factor < 1):
            raise ConfigError(f"{self.name}: load_factor must be a number >= 1, "
                              f"got {load_factor!r}")
        if isinstance(vnodes, bool) or not isinstance(vnodes, int) or vnodes < 1:
            raise ConfigError(f"{self.name}: vnodes must be an integer >= 1, got {vnodes!r}")
        if fallback not in ("request", "tenant"):
            raise ConfigError(f"{self.name}: fallback must be 'request' or 'tenant', "
                              f"got {fallback!r}")
        self.load_factor = float(load_factor)
        self.vnodes = vnodes
        self.fallback = fallback
        self._ring: ConsistentHashRing | None = None
        self._routable: tuple[InstanceView, ...] | None = None

    name = "session_affinity"

    def ring(self, cluster: ClusterView) -> ConsistentHashRing:
        routable = cluster.routable
        if routable is not self._routable or self._ring is None:
            ids = tuple(v.instance_id for v in routable)
            if self._ring is None or self._ring.ids != ids:
                self._ring = ConsistentHashRing(ids, self.vnodes)
            self._routable = routable
        return self._ring

    def key(self, request: Request) -> str:
        if request.session_id is not None:
            return request.session_id
        return request.request_id if self.fallback == "request" else request.tenant

    def target(self, request: Request, candidates: Sequence[InstanceView],
               cluster: ClusterView) -> InstanceView:
        """The candidate the bounded-load ring walk selects (``candidates`` non-empty)."""
        if len(candidates) == 1:
            return candidates[0]
        ring = self.ring(cluster)
        routable = cluster.routable
        total = sum(v.inflight for v in routable)
        cap = math.ceil(self.load_factor * (total + 1) / len(routable))
        if candidates is cluster.candidates:
            members = None  # a routable instance is a candidate iff it has room
        else:
            members = {v.instance_id: v for v in candidates}
        get = cluster.get
        best: InstanceView | None = None
        for iid in ring.walk(stable_hash(self.key(request))):
            if members is None:
                v = get(iid)
                if v is None or not v.has_room or v.health is not Health.UP:
                    continue
            else:
                v = members.get(iid)
                if v is None:
                    continue
            if v.inflight < cap:
                return v
            if best is None or v.inflight < best.inflight:
                best = v
        if best is None:  # candidates outside the ring (not routable): be safe
            best = min(candidates, key=lambda v: v.inflight)
        return best


class SessionAffinityFilter(_BoundedAffinity, Filter):
    """Narrows the candidates to the bounded-load consistent-hash target (see module doc)."""

    def filter(self, request: Request, candidates: Sequence[InstanceView],
               cluster: ClusterView) -> Sequence[InstanceView]:
        if not candidates:
            return candidates
        return (self.target(request, candidates, cluster),)


class SessionAffinityScorer(_BoundedAffinity, Scorer):
    """1 for the bounded-load consistent-hash target (see module doc), 0 for the others."""

    def score(self, request: Request, candidates: Sequence[InstanceView],
              cluster: ClusterView) -> Sequence[float]:
        t = self.target(request, candidates, cluster)
        return [1.0 if v is t else 0.0 for v in candidates]
