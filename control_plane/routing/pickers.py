"""Pickers: choose one candidate index from the candidates and their (optional) scores.

Every picker returns an index into the non-empty ``candidates``; with one candidate it is 0
and no random number is drawn. Randomness only from the ``rng`` passed in.
"""

from __future__ import annotations

import hashlib
import random
from bisect import bisect_right
from collections.abc import Sequence
from itertools import accumulate
from operator import attrgetter

from control_plane.routing.base import Picker
from control_plane.types import InstanceView, Request

__all__ = [
    "MaxScorePicker",
    "PowerOfTwoPicker",
    "RandomPicker",
    "RoundRobinPicker",
    "SmoothWeightedRoundRobinPicker",
    "WeightedRandomPicker",
]

_INDEX = attrgetter("index")


class MaxScorePicker(Picker):
    """The highest score; exact ties broken by the request. No scores: uniform.

    A tie goes to the ``h``-th tied candidate, ``h`` a hash of the request id keyed with a
    salt drawn once from each new ``rng`` (so the seed still decides, and ties spread
    uniformly over requests). Keyed on the request rather than drawn per tie, the choice
    does not depend on how many ties came before: a simulation and a live run of the same
    trace with the same seed break every tie they share the same way, even when timing
    makes one of them see a tie the other does not.
    """

    name = "max_score"

    def __init__(self) -> None:
        self._rng: random.Random | None = None
        self._salt = b""

    def pick(self, request: Request, candidates: Sequence[InstanceView],
             scores: Sequence[float] | None, rng: random.Random) -> int:
        n = len(candidates)
        if n == 1:
            return 0
        if scores is None:
            return rng.randrange(n)
        best = max(scores)
        ties = scores.count(best)
        i = scores.index(best)
        if ties > 1:  # the t-th maximum, found with C-level index() calls
            index = scores.index
            for _ in range(self._tie(request, rng) % ties):
                i = index(best, i + 1)
        return i

    def _tie(self, request: Request, rng: random.Random) -> int:
        if rng is not self._rng:
            self._rng = rng
            self._salt = rng.getrandbits(128).to_bytes(16, "little")
        digest = hashlib.blake2b(request.request_id.encode(), digest_size=8,
                                 key=self._salt).digest()
        return int.from_bytes(digest, "little")


class RandomPicker(Picker):
    """Uniform over the candidates (scores ignored)."""

    name = "random"

    def pick(self, request: Request, candidates: Sequence[InstanceView],
             scores: Sequence[float] | None, rng: random.Random) -> int:
        n = len(candidates)
        return 0 if n == 1 else rng.randrange(n)


class WeightedRandomPicker(Picker):
    """Probability proportional to the score, or to ``spec.weight`` without scorers.

    All-zero scores: uniform.
    """

    name = "weighted_random"

    def pick(self, request: Request, candidates: Sequence[InstanceView],
             scores: Sequence[float] | None, rng: random.Random) -> int:
        n = len(candidates)
        if n == 1:
            return 0
        weights = scores if scores is not None else [v.spec.weight for v in candidates]
        cum = list(accumulate(weights))
        total = cum[-1]
        if total <= 0.0:
            return rng.randrange(n)
        return min(bisect_right(cum, rng.random() * total), n - 1)


class RoundRobinPicker(Picker):
    """Cycles through the instances in cluster order (scores ignored).

    Remembers the cluster index (``InstanceView.index``) of the last pick and takes the first
    candidate with a larger index, wrapping around; so when the candidate set shrinks or
    grows, the rotation stays fair and never restarts at the first instance. Candidates are
    expected in cluster order, as ``ClusterView.candidates`` gives them (found by bisection).
    """

    name = "round_robin"

    def __init__(self) -> None:
        self._last = -1  # cluster index of the last pick

    def pick(self, request: Request, candidates: Sequence[InstanceView],
             scores: Sequence[float] | None, rng: random.Random) -> int:
        i = bisect_right(candidates, self._last, key=_INDEX)
        if i == len(candidates):
            i = 0
        self._last = candidates[i].index
        return i


class SmoothWeightedRoundRobinPicker(Picker):
    """nginx's smooth weighted round robin over ``spec.weight`` (scores ignored).

    Each pick adds every candidate's weight to its current weight, picks the largest
    (first in candidate order on ties) and subtracts the candidates' total weight from it.
    Current weights are kept per instance id, so the candidate set may change between
    calls: an instance without room keeps its current weight until it is a candidate again.
    """

    name = "smooth_weighted_round_robin"

    def __init__(self) -> None:
        self._current: dict[str, float] = {}

    def pick(self, request: Request, candidates: Sequence[InstanceView],
             scores: Sequence[float] | None, rng: random.Random) -> int:
        current = self._current
        get = current.get
        total = 0.0
        best_i = 0
        best_w = float("-inf")
        for i, v in enumerate(candidates):
            w = v.spec.weight
            total += w
            c = get(v.instance_id, 0.0) + w
            current[v.instance_id] = c
            if c > best_w:
                best_i, best_w = i, c
        current[candidates[best_i].instance_id] = best_w - total
        return best_i


class PowerOfTwoPicker(Picker):
    """Power of two choices: two distinct candidates at random, keep the better.

    With scores: the higher score. Without: fewer in-flight requests, then fewer
    outstanding tokens. A full tie keeps the first sample.
    """

    name = "power_of_two"

    def pick(self, request: Request, candidates: Sequence[InstanceView],
             scores: Sequence[float] | None, rng: random.Random) -> int:
        n = len(candidates)
        if n == 1:
            return 0
        i = rng.randrange(n)
        j = rng.randrange(n - 1)
        if j >= i:
            j += 1
        if scores is not None:
            return j if scores[j] > scores[i] else i
        a, b = candidates[i], candidates[j]
        if b.inflight < a.inflight or (b.inflight == a.inflight
                                       and b.inflight_tokens < a.inflight_tokens):
            return j
        return i
