"""Paged KV cache of one engine: a pool of fixed-size blocks with prefix caching.

Follows vLLM v1's ``BlockPool`` / ``KVCacheManager``:

- ``num_blocks`` blocks of ``block_size`` tokens; a request holds ``ceil(tokens / block_size)``.
- Every free block (reference count 0) sits in one LRU *free queue*. Allocation pops from the
  head; a popped block that still carried a cached prefix loses it (eviction). A released
  request's blocks are appended to the tail in *reverse* order, so its last blocks are
  evicted first and a surviving cached prefix stays contiguous.
- A full block of a prompt is identified by a key derived from the request's
  ``prefix_hashes`` (see :mod:`control_plane.engine.engine`); a new request hits the
  longest run of leading keys present in the cache, capped at ``num_tokens - 1`` tokens
  (the last token is always recomputed). A hit on a free cached block takes it out of the
  free queue.

Representation (for speed): the free queue holds *segments* ``[count, kind, ref]`` rather
than single blocks: ``PLAIN`` runs of blocks without a reusable identity (adjacent runs are
merged), single ``KEYED`` blocks (``ref`` = the key, indexed in the cache dict), and ``OWN``
runs: the full blocks of a *preempted* request beyond its keyed prefix (``ref`` = the
request), which only that request can hit again when it is resumed (its recompute finds its
own blocks, as vLLM's hashes of the prompt and generated tokens would). Eviction consumes an
``OWN`` run from its head side, which holds the request's last blocks, exactly as
block-by-block eviction would. A segment hit in the middle of the queue is emptied in place
(count 0) and dropped when it reaches the head.

The pool never over-allocates: :meth:`BlockPool.allocate` raises if asked for more blocks
than are free, and :meth:`BlockPool.check` verifies the accounting (tests call it).
"""

from __future__ import annotations

from collections import deque

__all__ = ["KEYED", "OWN", "PLAIN", "BlockPool", "KVOverAllocation"]

PLAIN, KEYED, OWN = 0, 1, 2


class KVOverAllocation(AssertionError):
    """More KV blocks were requested than are free (a scheduler bug, never expected)."""


class BlockPool:
    """Free-block accounting, LRU free queue and prefix cache of one engine."""

    __slots__ = ("_cache", "_fq", "block_size", "caching", "evicted_blocks", "free",
                 "num_blocks", "version")

    def __init__(self, num_blocks: int, block_size: int, caching: bool = True) -> None:
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.caching = caching
        self.free = num_blocks  # blocks with reference count 0 (cached or not)
        self._fq: deque[list] = deque([[num_blocks, PLAIN, None]]) if num_blocks else deque()
        self._cache: dict[int, list] = {}  # key -> [ref_count, free-queue segment or None]
        self.version = 0  # bumped whenever the set of cached keys or their refs change
        self.evicted_blocks = 0  # cached blocks that lost their identity (KEYED or OWN)

    @property
    def used(self) -> int:
        return self.num_blocks - self.free

    @property
    def cached_keys(self) -> int:
        return len(self._cache)

    # -- allocation -------------------------------------------------------------------
    def allocate(self, n: int) -> None:
        """Take ``n`` blocks from the head of the free queue (evicting cached ones)."""
        if n > self.free:
            raise KVOverAllocation(f"asked for {n} KV blocks, {self.free} free "
                                   f"of {self.num_blocks}")
        self.free -= n
        fq = self._fq
        while n:
            seg = fq[0]
            c = seg[0]
            if c <= n:
                fq.popleft()
                if not c:
                    continue
                n -= c
                seg[0] = 0
                kind = seg[1]
                if kind == KEYED:
                    del self._cache[seg[2]]
                    self.version += 1
                    self.evicted_blocks += 1
                elif kind == OWN:
                    self.evicted_blocks += c
            else:
                seg[0] = c - n
                if seg[1] == OWN:
                    self.evicted_blocks += n
                n = 0

    # -- prefix cache ---------------------------------------------------------------------
    def lookup(self, keys, nkeys: int, cap: int) -> tuple[int, int]:
        """(hit blocks, of which free) for the leading ``keys[:nkeys]``, at most ``cap``."""
        cache = self._cache
        h = ev = 0
        limit = min(nkeys, cap)
        while h < limit:
            e = cache.get(keys[h])
            if e is None:
                break
            if not e[0]:
                ev += 1
            h += 1
        return h, ev

    def touch(self, keys, h: int) -> None:
        """Take references on the first ``h`` keyed blocks (hits of an admitted request)."""
        cache = self._cache
        for i in range(h):
            e = cache[keys[i]]
            if not e[0]:
                e[1][0] = 0  # leave the queue (dropped when it reaches the head)
                e[1] = None
                self.free -= 1
            e[0] += 1
        if h:
            self.version += 1

    def take_own(self, seg: list, n: int) -> None:
        """Resume a preempted request with ``n`` blocks of its own segment ``seg``; the
        rest of the segment (if any) stays in place, as plain blocks."""
        self.free -= n
        seg[0] -= n
        seg[1] = PLAIN
        seg[2] = None

    @staticmethod
    def orphan(seg: list) -> None:
        """A preempted request's own blocks became unreachable: plain free blocks."""
        seg[1] = PLAIN
        seg[2] = None

    def register(self, key: int) -> bool:
        """Index a newly allocated full block under ``key`` (held by one request). False
        when the key is already cached (a concurrent duplicate; it is not indexed)."""
        cache = self._cache
        if key in cache:
            return False
        cache[key] = [1, None]
        self.version += 1
        return True

    # -- release ------------------------------------------------------------------------
    def release(self, keys, kh: int, own_full: int, plain: int, owner: object = None
                ) -> list | None:
        """Free a request's blocks in reverse order: ``plain`` tail blocks, ``own_full``
        full blocks beyond its keyed prefix (an OWN segment when ``owner`` is given and
        caching is on, plain otherwise), then its ``kh`` keyed blocks, last first (each
        joins the queue when its last reference goes). Returns the OWN segment, if any."""
        fq = self._fq
        seg = None
        if owner is None or not self.caching:
            plain += own_full
            own_full = 0
        if plain:
            self.free += plain
            tail = fq[-1] if fq else None
            if tail is not None and tail[1] == PLAIN:
                tail[0] += plain
            else:
                fq.append([plain, PLAIN, None])
        if own_full:
            self.free += own_full
            seg = [own_full, OWN, owner]
            fq.append(seg)
        if kh:
            cache = self._cache
            for i in range(kh - 1, -1, -1):
                e = cache[keys[i]]
                e[0] -= 1
                if not e[0]:
                    s = [1, KEYED, keys[i]]
                    e[1] = s
                    fq.append(s)
                    self.free += 1
            self.version += 1
        return seg

    # -- invariants ---------------------------------------------------------------------
    def check(self, held: int | None = None) -> None:
        """Raise AssertionError unless the accounting is consistent. ``held``: the blocks
        the requests hold, by the caller's count (must equal ``used``)."""
        assert 0 <= self.free <= self.num_blocks, (self.free, self.num_blocks)
        queued = sum(s[0] for s in self._fq)
        assert queued == self.free, f"free queue holds {queued}, free={self.free}"
        for key, (ref, seg) in self._cache.items():
            assert ref >= 0
            if ref == 0:
                assert seg is not None and seg[0] == 1 and seg[2] == key, key
            else:
                assert seg is None, key
        if held is not None:
            assert held == self.used, f"requests hold {held} blocks, pool says {self.used}"
