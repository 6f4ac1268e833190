"""An approximate, bounded index of which instance caches which prefix blocks.

The control plane cannot see the engines' prefix caches, so it remembers what it sent:
when a request is dispatched, the instance will hold its prompt's KV blocks
(``Request.prefix_hashes``, chained per block: a block hash stands for its whole prefix).

Eviction is an approximate LRU with two generations per instance: a dispatch puts all its
blocks into the young generation; when that would exceed half the budget, the old
generation is dropped (except blocks touched again since) and the young one becomes old.
An instance so holds at most its budget (and, once full, at least half of it), the recently
used blocks surviving, and a touch costs one C-level dict update rather than a move per
block. Each insert adds whole chains to the young generation, so every
generation, and what survives a rotation, is prefix-closed: an instance that holds block
``i`` of a chain holds blocks ``0..i-1``, and the holders of block ``i`` are a subset of
the holders of block ``i - 1`` (barring hash collisions; bad input degrades matches, never
breaks the index).

Layout: ``holders`` maps a block hash to its holder: one instance id (a str, the common
case, which keeps the index free of per-block container objects) or a set of ids. Thanks
to the prefix property a lookup binary-searches the chain: O(log(matched blocks)) dict
probes for the longest match, plus O(log) per other holder of the first block, never
O(indexed blocks).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import repeat

__all__ = ["PrefixIndex"]

Holder = str | set[str]


def _longest(hashes: Sequence[int], lo: int, hi: int, held: Callable[[int], bool]) -> int:
    """Largest ``k`` in ``lo..hi`` with ``k == lo`` or ``held(hashes[k - 1])``, for a
    ``held`` that is monotone along the chain (true up to some point, false after)."""
    while lo < hi:
        mid = (lo + hi + 1) >> 1
        if held(hashes[mid - 1]):
            lo = mid
        else:
            hi = mid - 1
    return lo


class _Generations:
    """One instance's blocks: ``young`` (touched since the last rotation) and ``old``."""

    __slots__ = ("old", "young")

    def __init__(self) -> None:
        self.young: dict[int, None] = {}
        self.old: dict[int, None] = {}

    def held(self, hashes: Sequence[int], n: int) -> int:
        """How many leading blocks of the chain ``hashes[:n]`` this instance holds: the
        longer of the two generations' (each prefix-closed), by C-level probes."""
        if n <= 0:
            return 0
        young, old = self.young, self.old
        last = hashes[n - 1]
        if last in young or last in old:
            return n
        first = hashes[0]
        held = _longest(hashes, 1, n - 1, young.__contains__) if first in young else 0
        if first in old:
            held = max(held, _longest(hashes, 1, n - 1, old.__contains__))
        return held


class PrefixIndex:
    """block hash -> holder(s), and per instance its blocks in two LRU generations."""

    __slots__ = ("_gens", "_holders")

    def __init__(self) -> None:
        self._holders: dict[int, Holder] = {}
        self._gens: dict[str, _Generations] = {}

    def insert(self, instance_id: str, hashes: Sequence[int], max_blocks: int,
               hint: tuple[int, int] | None = None) -> None:
        """Record that ``instance_id`` now caches ``hashes`` (a prefix chain); it keeps
        at most ``max(max_blocks, 2)`` blocks. ``hint``: ``(blocks it holds, blocks anyone
        holds)`` from a ``match_groups`` of the same chain just before, to skip the search.
        """
        n = len(hashes)
        if not n:
            return
        half = max(1, max_blocks >> 1)
        if n > half:
            hashes = hashes[:half]
            n = half
        g = self._gens.get(instance_id)
        if g is None:
            g = self._gens[instance_id] = _Generations()
        if len(g.young) + n > half:
            self._rotate(instance_id, g)
            hint = None  # the rotation may have dropped blocks the hint counted
        young = g.young
        holders = self._holders
        if hint is None:
            held = g.held(hashes, n)
            shared = -1  # unknown
        else:
            held, shared = min(hint[0], n), min(hint[1], n)
        if held < n:  # blocks held..n-1 are new here
            if shared < 0:
                shared = (_longest(hashes, held + 1, n, holders.__contains__)
                          if hashes[held] in holders else held)
            new = hashes[held:]
            if shared > held:  # held elsewhere up to ``shared``
                for h in hashes[held:shared]:
                    s = holders.get(h)
                    if s is None:  # only if the input breaks the prefix property
                        holders[h] = instance_id
                    elif type(s) is not str:
                        s.add(instance_id)
                    elif s != instance_id:
                        holders[h] = {s, instance_id}
                new = hashes[shared:]
            if new:  # new everywhere: one C-level update
                holders.update(zip(new, repeat(instance_id)))
        if held and hashes[held - 1] in young:  # young is prefix-closed: it has 0..held-1
            if held < n:
                young.update(zip(hashes[held:], repeat(None)))
        else:
            young.update(zip(hashes, repeat(None)))

    def _rotate(self, instance_id: str, g: _Generations) -> None:
        young = g.young
        drop = self._drop
        for h in g.old:
            if h not in young:
                drop(h, instance_id)
        g.old, g.young = young, {}

    def _drop(self, h: int, instance_id: str) -> None:
        """Remove ``instance_id`` from the holders of ``h`` (tolerant of bad input)."""
        holders = self._holders
        s = holders.pop(h, None)
        if s is None or s == instance_id:
            return
        if type(s) is str:
            holders[h] = s  # another instance's: keep it
        else:
            s.discard(instance_id)
            holders[h] = s if len(s) > 1 else next(iter(s))

    def match_groups(self, hashes: Sequence[int]) -> list[tuple[int, tuple[str, ...]]]:
        """``(matched leading blocks, instance ids)`` groups, longest match first (ids in
        no particular order)."""
        if not hashes:
            return []
        holders = self._holders
        first = holders.get(hashes[0])
        if first is None:
            return []
        longest = _longest(hashes, 1, len(hashes), holders.__contains__)
        if type(first) is str:
            return [(longest, (first,))]
        last = holders[hashes[longest - 1]]
        if type(last) is not str and len(last) == len(first):  # the common case
            return [(longest, tuple(first))]
        groups: dict[int, list[str]] = {}
        gens = self._gens
        for iid in first:
            m = longest if (iid == last if type(last) is str else iid in last) else (
                gens[iid].held(hashes, longest - 1))
            groups.setdefault(m, []).append(iid)
        return sorted(((m, tuple(ids)) for m, ids in groups.items()), reverse=True)

    def match(self, hashes: Sequence[int]) -> dict[str, int]:
        """instance id -> number of leading blocks of ``hashes`` it holds (0s omitted)."""
        return {iid: m for m, ids in self.match_groups(hashes) for iid in ids}

    def forget(self, instance_id: str) -> None:
        g = self._gens.pop(instance_id, None)
        if g is not None:
            for h in g.young.keys() | g.old.keys():
                self._drop(h, instance_id)

    def instances(self) -> list[str]:
        return list(self._gens)

    def size(self, instance_id: str | None = None) -> int:
        """Blocks indexed for one instance, or in all (with multiplicity)."""
        if instance_id is None:
            return sum(self.size(iid) for iid in self._gens)
        g = self._gens.get(instance_id)
        return 0 if g is None else len(g.young.keys() | g.old.keys())

    def distinct_blocks(self) -> int:
        return len(self._holders)
