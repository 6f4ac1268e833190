"""Router protocol and the filter -> weighted scorers -> picker pipeline.

``Router.route(request, candidates, cluster, rng)`` returns the id of the chosen instance or
None (hold the request). ``candidates`` are the instances that are UP and have room (after the
queue policy's restriction); routers never see unhealthy or draining instances there.

A :class:`PipelineRouter` runs filters (each narrows the candidates), weighted scorers (each
returns one score in [0, 1] per candidate, higher is better; the weighted sum is the final
score) and a picker (chooses an index from the candidates and, if any, their scores). The
built-in routers are pipelines of these parts, and users compose their own from the
registries. Every part is synchronous and pure; randomness only from the ``rng`` passed in.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from control_plane.actions import Outcome
from control_plane.types import ClusterView, InstanceView, Request

__all__ = ["Filter", "Picker", "PipelineRouter", "Router", "Scorer"]


class _Hooks:
    """Bookkeeping hooks every routing part may override (default: nothing)."""

    def on_dispatch(self, request: Request, instance: InstanceView, now: float) -> None:
        pass

    def on_finish(self, request: Request, instance: InstanceView, outcome: Outcome | None,
                  now: float) -> None:
        """An attempt on ``instance`` ended (completed, failed or retried elsewhere)."""


class Router(_Hooks):
    name: str = "base"

    def route(self, request: Request, candidates: Sequence[InstanceView],
              cluster: ClusterView, rng: random.Random) -> str | None:
        raise NotImplementedError


class Filter(_Hooks):
    name: str = "filter"

    def filter(self, request: Request, candidates: Sequence[InstanceView],
               cluster: ClusterView) -> Sequence[InstanceView]:
        raise NotImplementedError


class Scorer(_Hooks):
    name: str = "scorer"

    def score(self, request: Request, candidates: Sequence[InstanceView],
              cluster: ClusterView) -> Sequence[float]:
        """One score in [0, 1] per candidate, higher is better."""
        raise NotImplementedError


class Picker(_Hooks):
    name: str = "picker"

    def pick(self, request: Request, candidates: Sequence[InstanceView],
             scores: Sequence[float] | None, rng: random.Random) -> int:
        """Index into ``candidates`` (non-empty). ``scores`` is None without scorers."""
        raise NotImplementedError


class PipelineRouter(Router):
    """filters -> weighted scorers -> picker."""

    def __init__(self, picker: Picker, scorers: Sequence[tuple[Scorer, float]] = (),
                 filters: Sequence[Filter] = (), name: str = "pipeline") -> None:
        for s, w in scorers:
            if not isinstance(w, (int, float)) or isinstance(w, bool) or w < 0:
                raise ValueError(f"scorer {s.name!r} weight must be a number >= 0, got {w!r}")
        self.name = name
        self.picker = picker
        self.scorers = tuple((s, float(w)) for s, w in scorers)
        self.filters = tuple(filters)
        self._parts: tuple[_Hooks, ...] = (*self.filters, *(s for s, _ in self.scorers),
                                           picker)
        # only the parts that override a hook get called for it
        self._on_dispatch = tuple(p for p in self._parts
                                  if type(p).on_dispatch is not _Hooks.on_dispatch)
        self._on_finish = tuple(p for p in self._parts
                                if type(p).on_finish is not _Hooks.on_finish)

    def route(self, request: Request, candidates: Sequence[InstanceView],
              cluster: ClusterView, rng: random.Random) -> str | None:
        for f in self.filters:
            candidates = f.filter(request, candidates, cluster)
            if not candidates:
                return None
        if not candidates:
            return None
        scores = None
        scorers = self.scorers
        if scorers:
            s0, w0 = scorers[0]
            scores = s0.score(request, candidates, cluster)
            if w0 != 1.0:
                scores = [w0 * x for x in scores]
            for s, w in scorers[1:]:
                if w:
                    scores = [a + w * b for a, b in zip(scores, s.score(request, candidates,
                                                                        cluster), strict=True)]
        return candidates[self.picker.pick(request, candidates, scores, rng)].instance_id

    def on_dispatch(self, request: Request, instance: InstanceView, now: float) -> None:
        for p in self._on_dispatch:
            p.on_dispatch(request, instance, now)

    def on_finish(self, request: Request, instance: InstanceView, outcome: Outcome | None,
                  now: float) -> None:
        for p in self._on_finish:
            p.on_finish(request, instance, outcome, now)

    def describe(self) -> str:
        parts = [f.name for f in self.filters]
        parts += [f"{s.name}:{w:g}" for s, w in self.scorers]
        parts.append(self.picker.name)
        return " -> ".join(parts)
