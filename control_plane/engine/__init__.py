"""The iteration-level model of one vLLM engine (v1 scheduler semantics), sans I/O.

A pure state machine driven by its caller's clock, shared by the two drivers:

- the simulator (:mod:`sim.cluster`) runs it in SimPy time, with fast-forward of decode runs;
- the emulated engine (:mod:`live.emulate`, ``sagellm emulate``) runs it on the event loop's
  clock, one iteration at a time, and streams the tokens of each iteration when it ends.

Modules: :mod:`~control_plane.engine.engine` (the :class:`Engine` facade),
:mod:`~control_plane.engine.scheduler` (one scheduling step: budget, preemption,
admission), :mod:`~control_plane.engine.decode` (implicit decode state, decode runs),
:mod:`~control_plane.engine.seq` (per-request state), :mod:`~control_plane.engine.kv_cache`
(paged KV blocks, prefix cache), :mod:`~control_plane.engine.config` (:class:`EngineConfig`,
:class:`StepOutcome`), :mod:`~control_plane.engine.contention` (engines sharing a host slow
each other down: :class:`SharedHostPredictor`).
"""

from control_plane.engine.config import EngineConfig, StepOutcome
from control_plane.engine.contention import SharedHostPredictor, neighbour_slowdowns, spin_s
from control_plane.engine.engine import Engine
from control_plane.engine.kv_cache import BlockPool, KVOverAllocation

__all__ = ["BlockPool", "Engine", "EngineConfig", "KVOverAllocation", "SharedHostPredictor",
           "StepOutcome", "neighbour_slowdowns", "spin_s"]
